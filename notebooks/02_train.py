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
# # 02 · Train: one loss on one dataset with one seed
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/vgcore/blob/main/notebooks/02_train.ipynb)
# [![Launch on Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/OWNER/vgcore/main?urlpath=lab/tree/notebooks/02_train.ipynb)
#
# Trains the 128-d L2-normalised projection head on the frozen features with one loss
# (`vgcore.train.run`), logging GREEDINESS every step (from the step's own backward pass) and
# VARIANCE and retrieval every epoch. The run is written to
# `results/<profile>/<dataset>/<loss>/seed<k>/` (with `overrides`, to the profile's variant folder
# `results/<profile>/variants/<digest>/...`, so it never replaces the profile's own run); if that run
# is already complete with the same configuration (same config hash, files intact) it is loaded
# instead of retrained.
#
# The build trains every loss of a dataset x seed in one fused job first (`python -m vgcore sweep`: the
# losses share one batch stream, and each run equals the same run trained alone), then runs this
# notebook once per loss x dataset x seed: it finds the run complete, loads it and plots it. The
# executed copy is kept beside the run's results as `02_train.ipynb`.

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
dataset = "fashionmnist"  # one of the profile's datasets
loss = "triplet"  # contrastive | triplet | npair | infonce | arcface | scl | ccl
seed = 0
results_root = "results"
data_root = None  # dataset root (default: $VGCORE_DATA or ./data)
cache_dir = None  # feature cache (default: $VGCORE_CACHE or ./cache)
overrides = {}  # RunConfig overrides, e.g. {"epochs": 3, "loss_params": {"margin": 0.2}}
tag = None  # the variant folder of a run with overrides (None: named by their digest)
threads = 0  # torch CPU threads (0: torch's default)

# %%
import pandas as pd
import torch

from vgcore import train
from vgcore.config import get_profile
from vgcore.report import plots
from vgcore.results import EPOCH_COLUMNS, is_current, load_run, run_dir

# Bad input stops here, naming the valid choices.
config = get_profile(profile).config(dataset, loss, int(seed), **overrides)
path = run_dir(results_root, config, tag)
if threads:
    torch.set_num_threads(int(threads))
plots.use_style()
print(f"{profile}/{dataset}/{loss}/seed{seed}: {config.epochs} epochs, batch {config.batch_size}, lr {config.lr}, "
      f"head {config.head}, sampler {config.sampler}, loss_params {config.loss_params}")

# %% [markdown]
# ## Train (or load the complete run)

# %%
if is_current(path, config.config_hash()):
    print(f"complete run with the same config found in {path}: loaded, not retrained")
else:
    train.run(config, path, data_root=data_root, cache_dir=cache_dir, progress=False)
    print(f"trained and written to {path}")
run = load_run(path)
s = run["summary"]
if s.get("wall_time_s") is not None:
    group = s.get("group_size", 1)  # runs trained together on one batch stream
    print(f"wall time {s['wall_time_s']:.1f} s, {s['steps_per_s']:.1f} steps/s"
          + (f" (for the group of {group} runs it was trained with)" if group > 1 else ""))
if s.get("snapshot"):  # restored from figures/<profile>/results.tar.gz (Binder, Colab, make restore)
    print(f"restored from the committed snapshot: step log as means of {s['snapshot']['steps_block']} steps, "
          "no timings")

# %% tags=["nbval-check-output"]
print(f"{s['n_steps']} steps over {config.epochs} epochs; evaluated epochs "
      f"{', '.join(str(e) for e in sorted(run['epochs']['epoch'].unique()))} on the "
      f"{' and '.join(sorted(run['epochs']['split'].unique()))} splits")
print("epochs.csv has the schema's columns:", list(run["epochs"].columns) == list(EPOCH_COLUMNS))

# %% [markdown]
# ## Final metrics
#
# Retrieval (Recall@K, MAP@R) and VARIANCE of the final test embeddings, the epochs to
# convergence, and the mean GREEDINESS over all steps.

# %%
final = {k: s["final"][k] for k in ("recall@1", "recall@2", "recall@4", "recall@8", "map@r", "intra_var", "inter_var",
                                    "centroid_dist_cv", "margin_mean") if k in s["final"]}
pd.Series({**final, **s["convergence"], **s["greediness_mean"]}, name=f"{loss} / {dataset} / seed {seed}").round(4).to_frame()

# %% [markdown]
# ## Curves of this run
#
# Top row, per step (faint: raw; solid: rolling mean): the training loss; the **active ratio**, the
# share of samples that take part in the update (from the loss's active terms and from non-zero
# embedding gradients); the gradient norms. A *greedy* loss keeps many samples active with small
# gradients; a selective one updates through few, larger ones.
#
# Bottom row, per epoch (0 = the untrained head) on the test split and a fixed training subset:
# intra- and inter-class variance (VARIANCE) and Recall@1.

# %%
fig = plots.run_curves(run["steps"], run["epochs"], eval_split=config.eval_split, width="page",
                       title=f"{loss} on {dataset} (seed {seed}, profile {profile})")
