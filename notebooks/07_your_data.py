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
# # 07 · Your data: the seven losses on your own features
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/vgcore/blob/main/notebooks/07_your_data.ipynb)
# [![Launch on Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/OWNER/vgcore/main?urlpath=lab/tree/notebooks/07_your_data.ipynb)
#
# The whole comparison on **your** features: a projection head trained with each of the seven losses
# (profile `custom`: frozen features in, 128-d L2-normalised embeddings out), then the tables and
# figures of notebooks 03-06 and what they mean for choosing a loss.
#
# Your file: `np.savez("my_features.npz", features=X, labels=y)` with `X` [N, D] float features
# (from any frozen backbone) and `y` [N] class labels (integers or strings); optionally
# `superclasses=` [N] (a coarser label per sample) and `split=` [N] (`"train"`/`"test"` per sample;
# without it half of each class is held out for test, `class_split`/`test_fraction` in
# PROTOCOL.md). The file is checked before anything trains; a bad one gets an error naming the
# file, the key and the fix. Runs are cached under `results/custom/` by the file's content: a
# second run with the same file and settings loads them. The same runs from the command line:
# `python -m vgcore sweep --features my_features.npz`.

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
features = "my_features.npz"  # your .npz (or a .npy of features, with its labels file below)
labels = None  # the labels .npy of a features .npy; None for a .npz
images = None  # optional .npy of images [N, H, W] or [N, H, W, C] uint8, aligned with the rows of your features' test split
losses = "all"  # or a list, e.g. ["triplet", "scl", "infonce", "contrastive"]
seeds = [0, 1, 2]
settings = {}  # config overrides, e.g. {"epochs": 40, "lr": 1e-4, "batch_size": 512}
profile = "custom"  # the profile these runs belong to (its defaults: vgcore/config.py)
results_root = "results"  # where the runs are written
figures_root = "results/figures"  # figures and tables go to <figures_root>/custom/<file name>/

# %%
from pathlib import Path

from IPython.display import Markdown, display

from vgcore import train
from vgcore.config import get_profile
from vgcore.report import plots
from vgcore.report.analysis import (
    GREEDINESS_TABLE,
    RETRIEVAL_TABLE,
    VARIANCE_TABLE,
    mean_std_table,
    write_table,
)
from vgcore.report.claims import check_claims, format_claims
from vgcore.report.diagnose import collect_configs, configs_for, what_this_means
from vgcore.results import load_run

assert get_profile(profile).name == "custom", "this notebook trains the custom profile on your file"
configs = configs_for(features, losses, seeds, labels_path=labels, **settings)  # checks the file now
out_dir = Path(figures_root) / "custom" / Path(features).stem
NOTEBOOK = "07_your_data.ipynb"
plots.use_style()
print(f"{len(configs)} runs: {sorted({c.loss for c in configs})} x seeds {sorted({c.seed for c in configs})} "
      f"on {Path(features).name} (sha256 {configs[0].dataset_options['sha256']})")

# %% [markdown]
# ## Train (or load) the runs
#
# Complete runs with the same file, settings and seed are loaded, not retrained.

# %%
train.sweep(configs, results_root, progress=False)
summary = collect_configs(results_root, configs, "summary")
steps = collect_configs(results_root, configs, "steps")
epochs = collect_configs(results_root, configs, "epochs")

# %% tags=["nbval-check-output"]
print(f"{len(summary)} complete runs, {summary['loss'].nunique()} losses, {summary['seed'].nunique()} seed(s)")


# %%
def save_table(table, name, caption):
    write_table(table, out_dir / "tables" / name, f"{caption} ({Path(features).name})", NOTEBOOK)
    return table


def save_figure(fig, name):
    plots.save_figure(fig, out_dir / name, NOTEBOOK, profile)
    return fig


# %% [markdown]
# ## VARIANCE: how each loss shapes your embedding space
#
# Final test embeddings, mean ± std over seeds. Higher **intra-class variance**: more within-class
# diversity kept; higher **centroid-distance CV**: more unevenly spaced classes (PROTOCOL.md).

# %%
save_table(mean_std_table(summary, VARIANCE_TABLE), "variance", "VARIANCE of the final test embeddings")

# %%
save_figure(plots.metric_dots(summary, ["intra_var", "inter_var", "centroid_dist_cv"]), "variance_bars")

# %%
save_figure(plots.metric_over_epochs(epochs, "intra_var"), "intra_var_over_epochs")

# %%
save_figure(plots.scatter_means(summary, "centroid_dist_mean", "centroid_dist_cv"), "separation_vs_spacing")

# %%
first = summary[summary.seed == summary.seed.min()]
emb = {"custom": {r.loss: load_run(r.path)["embeddings"] for r in first.itertuples()}}
save_figure(plots.embedding_projections(emb), "embeddings_pca")

# %% [markdown]
# ## What each loss retrieves
#
# The same queries for every loss (lowest seed): one random test sample for each of the first ten
# classes, then the four on which the losses' precision@4 differs most. Right of each query, each
# loss's 4 nearest test samples (cosine, first left); a wrong class is framed. With `images` (your
# test split's pictures, in the order of its rows) the pictures are drawn, else a tile naming each
# sample's class.

# %%
from vgcore.report.gallery import given_images, loss_galleries, retrieval_gallery

g = loss_galleries({r.loss: load_run(r.path) for r in first.itertuples()})
pictures = None if images is None else given_images(images, configs[0].eval_size, len(g.y))
for queries, name, what in ((g.queries[:10], "gallery_random", "random queries"),
                            (g.disagreements, "gallery_disagreements", "where the losses disagree most")):
    if len(queries):
        save_figure(retrieval_gallery(queries, g.ranked, g.y, images=pictures, coarse=g.coarse,
                                      title=f"{Path(features).name}: {what}"), name)

# %% [markdown]
# ## GREEDINESS: how each loss spreads its updates

# %%
save_table(mean_std_table(summary, GREEDINESS_TABLE), "greediness", "GREEDINESS over training")

# %%
save_figure(plots.metric_over_steps(steps, ["active_ratio", "grad_active_ratio", "grad_effective_share"]),
            "active_ratio_over_training")

# %%
save_figure(plots.metric_dots(summary, ["active_ratio_mean", "grad_effective_share_mean", "grad_norm_mean"]),
            "greediness_bars")

# %% [markdown]
# ## Retrieval and the efficiency-granularity trade-off

# %%
table = save_table(mean_std_table(summary, RETRIEVAL_TABLE), "retrieval", "retrieval on the test split")
table

# %% tags=["nbval-check-output"]
print(list(table.columns))

# %%
save_figure(plots.metric_over_epochs(epochs, "recall@1"), "recall_over_epochs")

# %%
save_figure(plots.tradeoff(summary, epochs), "tradeoff")

# %% [markdown]
# ## The paper's claims on your data

# %%
claims = check_claims(summary)
save_table(format_claims(claims), "claims", "the paper's claims checked on these runs")

# %% tags=["nbval-check-output"]
print(f"{len(claims)} claim checks")

# %%
save_figure(plots.claims_intervals(claims), "claims")

# %% [markdown]
# ## What this means

# %%
display(Markdown(what_this_means(summary, claims)))

# %% tags=["nbval-check-output"]
print(sorted(p.name for p in out_dir.rglob("*.csv")))
