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
# # 04 · GREEDINESS: how many samples each loss updates, and how hard
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/vgcore/blob/main/notebooks/04_greediness.ipynb)
# [![Launch on Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/OWNER/vgcore/main?urlpath=lab/tree/notebooks/04_greediness.ipynb)
#
# Per training step (from the step's own backward pass, no second pass):
#
# - **active ratio**: the share of samples that take part in the update. `active_ratio` counts
#   samples in at least one active loss term (a hinge above zero, a non-negligible softmax weight);
#   `grad_active_ratio` counts samples whose embedding gradient is non-negligible;
#   `grad_effective_share` asks how evenly the update is spread: Kish's effective number of
#   samples of the per-sample gradient norms, over the batch size (1: every sample moves as much;
#   k/B: k samples move, the rest not at all). It needs no threshold, so it still separates
#   softmax losses, whose every sample has some gradient;
# - **gradient norms**: of the head's (and proxies') parameters, and per sample of the embeddings.
#
# A *greedy* loss updates through many samples with small steps (the paper: Contrastive, InfoNCE);
# a selective one through few, larger ones (Triplet with its margin). The exact rules for each loss
# are in PROTOCOL.md ("Diagnostics: GREEDINESS").

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

# %%
from pathlib import Path

from IPython.display import display

from vgcore.config import get_profile
from vgcore.report import plots
from vgcore.report.analysis import GREEDINESS_TABLE, PROBE_TABLE, mean_std_table
from vgcore.report.outputs import Outputs, collect_profile, describe_runs

summary = collect_profile(results_root, profile, "summary", variant=variant)  # fails naming valid profiles, or if nothing ran
steps = collect_profile(results_root, profile, "steps", variant=variant)
out = Outputs("04_greediness", Path(figures_root) / profile, profile, runs=summary)  # captions name these runs
plots.use_style()
print(f"{describe_runs(summary)}; {len(steps)} rows of step logs")

# %% [markdown]
# ## The GREEDINESS table
#
# Means over all training steps, then mean ± std over seeds; with the steps each run needed to cover
# 90% of its (smoothed) loss decrease, and the share of its training-subset compaction done in the
# first epoch (convergence and compaction speed). Per-sample gradient norms are tangential to the
# sphere, so they compare across losses (PROTOCOL.md "Diagnostics: GREEDINESS").

# %%
table = mean_std_table(summary, GREEDINESS_TABLE)
out.table(table, "04_greediness")
table

# %% tags=["nbval-check-output"]
print(f"{len(table)} rows (dataset x loss); columns: {', '.join(table.columns)}")

# %% [markdown]
# ## Active ratio over training
#
# Each run's steps averaged in 60 equal ranges of training, then the mean over seeds (band: ± 1 std).
# A loss whose active ratio falls during training stops updating the samples it already satisfies
# (hinge losses); softmax losses keep every sample active with shrinking weights. A ratio that is the
# same for every loss (saturated at 1) is noted above the panels instead of drawn: it says nothing
# about the losses, and the effective share of moving samples is what tells them apart.

# %%
fig = plots.metric_over_steps(steps, ["active_ratio", "grad_active_ratio", "grad_effective_share"], width="page")
out.figure(fig, "04_active_ratio_over_training")
fig

# %% [markdown]
# ## Gradient norms over training
#
# Log scale. The parameter gradient norm and the mean per-sample embedding gradient follow each
# loss's own constants (temperature, scale, reduction): they are scale-dependent. Under Adam the size
# of a gradient does not set the size of the update; each sample's share of Adam's actual step
# (`adam_step_norm_mean`, its gradient preconditioned by Adam's second moment) is free of the loss's
# scale, and is what "stronger / smaller per-sample updates" is read on.

# %%
fig = plots.metric_over_steps(steps, ["grad_norm", "emb_grad_norm_mean", "adam_step_norm_mean"],
                              logy=("grad_norm", "emb_grad_norm_mean", "adam_step_norm_mean"), width="page")
out.figure(fig, "04_grad_norm_over_training")
fig

# %% [markdown]
# ## Per loss, averaged over training
#
# Dot: seed mean, bar: ± 1 std over seeds. The parameter-gradient norm spans orders of magnitude
# across losses, so its axis is logarithmic.

# %%
fig = plots.metric_dots(summary, ["tuple_active_ratio_mean", "grad_active_ratio_mean", "grad_effective_share_mean",
                                  "adam_step_norm_mean_mean"], width="page")
out.figure(fig, "04_greediness_bars")
fig

# %% [markdown]
# ## On the same samples: the probe batches (a tuned profile only)
#
# The training batches differ in what each loss sees once runs stop at different epochs. The fair
# profile also reads every head on two fixed batches (one random, one P x K), the same for every
# loss, at 0, 25, 50, 75 and 100 % of its own training, without a step (PROTOCOL.md, "GREEDINESS on
# probe batches"). Each sample's share of Adam's step needs a step and is not read there.

# %%
if get_profile(profile).tuned:
    probes = collect_profile(results_root, profile, "probes", variant=variant)
    out.table(mean_std_table(probes, PROBE_TABLE, by=("dataset", "loss", "batch", "fraction")), "04_probes")
    fig = plots.probe_readings(probes, width="page")
    out.figure(fig, "04_probes")
    display(fig)

# %% tags=["nbval-check-output"]
print(out.finish())
