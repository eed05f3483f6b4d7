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
# # 01 · Features: one dataset through its frozen backbone
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/vgcore/blob/main/notebooks/01_features.ipynb)
# [![Launch on Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/OWNER/vgcore/main?urlpath=lab/tree/notebooks/01_features.ipynb)
#
# The paper trains only a projection head on top of a **frozen** backbone, so the backbone's
# features are computed once per dataset and cached on disk (`vgcore.features`, cache in
# `$VGCORE_CACHE` or `./cache`). This notebook shows a few images of the dataset, extracts (or
# loads) the train and test features of the profile's backbone, and draws a 2-D PCA of them: the
# starting point every loss works from.
#
# In the build (`make demo`, `make paper`) it runs once per dataset, before any training notebook,
# so that the parallel training jobs find the cache ready.

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
data_root = None  # dataset root (default: $VGCORE_DATA or ./data)
cache_dir = None  # feature cache (default: $VGCORE_CACHE or ./cache)
n_images = 16  # sample images to show
overrides = {}  # RunConfig overrides, e.g. {"backbone_options": {"weights": "random"}} (untrained ViT, tests only)

# %%
import time

import numpy as np

from vgcore import train
from vgcore.config import get_profile
from vgcore.data import check_available, load_dataset
from vgcore.report import plots

# Bad input stops here, naming the valid choices.
prof = get_profile(profile)
config = prof.config(dataset, prof.losses[0], prof.seeds[0], **overrides)
check_available(config.dataset, data_root)
plots.use_style()
print(f"profile {profile!r}: dataset {dataset!r} through backbone {config.backbone!r}")

# %% [markdown]
# ## Sample images
#
# A few training images with their class names (for a set of feature vectors, such as the
# synthetic fine-grained set, there is nothing to show here: its "images" are vectors, drawn below).

# %%
split = load_dataset(dataset, data_root, "train", **config.dataset_options)
print(split)
if split.kind == "vectors":
    print(f"{tuple(split.images.shape)} float vectors: no images to show")
else:
    pick = sorted(np.random.default_rng(0).choice(len(split), min(n_images, len(split)), replace=False).tolist())
    fig = plots.sample_images(split.get(pick), split.labels[pick].numpy(), split.class_names, width="page")

# %% [markdown]
# ## Features
#
# Extracted once and cached; a second run of this cell loads the cache (the time printed below
# tells which happened). The first run on a machine extracts every image's features, with a progress
# bar: for FashionMNIST's 70,000 images, minutes on a laptop CPU. `make restore` brings back the
# runs, not this cache. The shapes are what every training run of this dataset sees.

# %%
t0 = time.perf_counter()
feats = {s: train.load_features(config, s, data_root, cache_dir, progress=True) for s in ("train", config.eval_split)}
print(f"features ready in {time.perf_counter() - t0:.1f} s")

# %% tags=["nbval-check-output"]
for s, (x, y) in feats.items():
    print(f"{s}: {x.shape[0]} samples x {x.shape[1]} features, {y.unique().numel()} classes, dtype {x.dtype}")

# %% [markdown]
# ## The frozen features before any training
#
# A 2-D PCA of the test features, coloured by class: the first ten classes, or, on a set with
# superclasses, the fine classes of one superclass (the hard part of a fine-grained set). The axes say
# how much of the variance each component explains. How much the classes already separate here is
# what the head starts from; the training notebooks show how each loss reshapes this space.

# %%
x, y = feats[config.eval_split]
test = load_dataset(dataset, data_root, config.eval_split, **config.dataset_options)
coarse = None if test.coarse_labels is None else test.coarse_labels.numpy()
fig = plots.feature_projection(x.numpy(), y.numpy(), title=f"{dataset} · {config.backbone} features (PCA)",
                               coarse=coarse, class_names=test.class_names, width="column")
