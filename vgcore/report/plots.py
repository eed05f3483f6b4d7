"""Figure functions the notebooks call (matplotlib + seaborn; headless: Agg, in Jupyter: inline).

Every function takes tables in the schema of `vgcore.results.collect` (``summary``, ``epochs`` or
``steps``) and returns a matplotlib Figure; `save_figure` writes it as PNG and PDF with a footer that
names the notebook that drew it. Colours are fixed per loss (`loss_palette`), so a loss has the same
colour in every figure; losses appear in the registry's order (`vgcore.registry.LOSSES`). Axis
labels come from the one label table, `vgcore.metrics.LABELS`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from vgcore.metrics import label
from vgcore.registry import VARIANTS, names

LOSSES = names("loss")

STEP_LOSS = "train_loss"
"""Column of the per-step loss value in steps.csv (``loss`` names the loss function)."""


def loss_palette(losses: Sequence[str] = LOSSES) -> dict[str, tuple[float, float, float]]:
    """One fixed colour per loss (colour-blind palette, in registry order); a named variant gets a
    lighter shade of the colour of the loss it is a variant of."""
    base = [x for x in LOSSES if x not in VARIANTS]
    fixed = dict(zip(base, sns.color_palette("colorblind", len(base)), strict=True))
    for variant, of in VARIANTS.items():
        fixed[variant] = tuple(0.55 * c + 0.45 for c in fixed[of])
    return {loss: fixed[loss] for loss in losses if loss in fixed}


def loss_order(frame: pd.DataFrame) -> list[str]:
    present = set(frame["loss"])
    return [x for x in LOSSES if x in present]


def use_style() -> None:
    """The house style: white grid, small fonts, tight figures."""
    sns.set_theme(style="whitegrid", context="paper", font_scale=1.0)
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "savefig.bbox": "tight",
                         "axes.titlesize": "medium", "legend.fontsize": "small"})


def _check_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} needs columns {missing}; the table has {sorted(frame.columns)}")
    if frame.empty:
        raise ValueError(f"{what}: the table is empty (no complete runs collected?)")


def save_figure(fig: plt.Figure, stem: str | os.PathLike, notebook: str, profile: str | None = None,
                runs: str | None = None) -> list[Path]:
    """Write `fig` as <stem>.png and <stem>.pdf with a footer naming `notebook` (and `profile`, and the
    digest of the `runs` it was drawn from, :func:`vgcore.results.runs_digest`); close it.

    The PDF carries no creation date and the PNG no timestamp, so an unchanged figure rewrites the
    same bytes (clean diffs of the committed demo figures).
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    footer = (f"vgcore · notebooks/{notebook}" + (f" · profile {profile}" if profile else "")
              + (f", runs {runs}" if runs else ""))
    fig.text(0.995, 0.002, footer, ha="right", va="bottom", fontsize=6, color="0.45")
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.savefig(paths[0], metadata={"Software": None})
    fig.savefig(paths[1], metadata={"CreationDate": None, "Creator": None, "Producer": None})
    plt.close(fig)
    return paths


def _grid(n: int, ncols: int = 3, size: tuple[float, float] = (3.6, 2.7)) -> tuple[plt.Figure, np.ndarray]:
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes


def _figure_legend(fig: plt.Figure, ax: plt.Axes) -> None:
    """One legend for the whole figure, to the right of the panels (saved with bbox "tight")."""
    handles, labels = ax.get_legend_handles_labels()
    fig.tight_layout()
    if handles:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)


# ---------------------------------------------------------------------------------------------
# one run (notebook 02)
# ---------------------------------------------------------------------------------------------

def run_curves(steps: pd.DataFrame, epochs: pd.DataFrame, title: str = "", smooth: int = 10,
               eval_split: str = "test") -> plt.Figure:
    """One run's curves: loss, active ratios and gradient norms per step; variance and Recall@1 per epoch.

    `steps` and `epochs` are the run's ``steps.csv`` and ``epochs.csv``; step curves are a rolling mean over `smooth` steps with the raw values faint behind.
    """
    _check_columns(steps, ["step", STEP_LOSS, "active_ratio", "grad_norm"], "run_curves(steps)")
    _check_columns(epochs, ["epoch", "split", "intra_var", "inter_var", "recall@1"], "run_curves(epochs)")
    fig, axes = _grid(6, 3)
    window = max(1, min(smooth, len(steps) // 4 or 1))

    def step_panel(ax, cols, ylabel, logy=False):
        for col in cols:
            if col not in steps or steps[col].isna().all():
                continue
            raw = steps[col].to_numpy(float)
            line, = ax.plot(steps["step"], pd.Series(raw).rolling(window, min_periods=1).mean(), label=label(col))
            ax.plot(steps["step"], raw, color=line.get_color(), alpha=0.2, lw=0.6)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        if logy:
            ax.set_yscale("log")
        if len(cols) > 1:
            ax.legend(loc="best")

    step_panel(axes[0, 0], [STEP_LOSS], "training loss")
    step_panel(axes[0, 1], ["active_ratio", "grad_active_ratio", "grad_effective_share", "tuple_active_ratio"],
               "active ratio")
    axes[0, 1].set_ylim(-0.03, 1.03)
    step_panel(axes[0, 2], ["grad_norm", "emb_grad_norm_mean"], "gradient norm", logy=True)
    for ax, cols, ylabel in ((axes[1, 0], ["intra_var"], "intra-class variance"),
                             (axes[1, 1], ["inter_var"], "inter-class variance"),
                             (axes[1, 2], ["recall@1"], "Recall@1")):
        for split, frame in epochs.groupby("split", sort=True):
            frame = frame.sort_values("epoch")
            ax.plot(frame["epoch"], frame[cols[0]], marker="o", ms=3,
                    ls="-" if split == eval_split else "--", label=split)
        ax.set_xlabel("epoch (0 = untrained head)")
        ax.set_ylabel(ylabel)
        ax.legend(loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# across runs (notebooks 03-06)
# ---------------------------------------------------------------------------------------------

def metric_bars(summary: pd.DataFrame, metrics: Sequence[str], title: str = "") -> plt.Figure:
    """Bars of each metric per loss (mean over seeds, black ticks = seed std), one row per dataset."""
    _check_columns(summary, ["dataset", "loss", *metrics], "metric_bars")
    datasets = sorted(summary["dataset"].unique())
    order = loss_order(summary)
    palette = loss_palette(order)
    fig, axes = plt.subplots(len(datasets), len(metrics), squeeze=False,
                             figsize=(3.2 * len(metrics), 2.6 * len(datasets)))
    for i, dataset in enumerate(datasets):
        frame = summary[summary["dataset"] == dataset]
        for j, metric in enumerate(metrics):
            ax = axes[i, j]
            sns.barplot(frame, x="loss", y=metric, hue="loss", order=order, hue_order=order, palette=palette,
                        errorbar="sd", err_kws={"linewidth": 1}, capsize=0.2, ax=ax, legend=False)
            sns.stripplot(frame, x="loss", y=metric, order=order, color="0.2", size=2.5, ax=ax, legend=False)
            ax.set_xlabel("")
            ax.set_ylabel(label(metric))
            ax.tick_params(axis="x", rotation=45)
            ax.set_title(f"{dataset}" if j == 0 else "", loc="left")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _readable_ylim(ax: plt.Axes, rel: float = 0.02) -> None:
    """A linear y-axis spanning at least ``rel`` of its level, without an offset label.

    A metric that is constant up to rounding (an active ratio of 1.0 for every loss) would otherwise
    be stretched over the whole axis with ticks like "+1, -0.00002".
    """
    if ax.get_yscale() != "linear":
        return
    lo, hi = ax.get_ylim()
    half = rel * max(abs(lo), abs(hi), 1e-12) / 2
    if hi - lo < 2 * half:
        mid = (lo + hi) / 2
        ax.set_ylim(mid - half, mid + half)
    ax.ticklabel_format(axis="y", useOffset=False)


def _mean_band(ax, frame: pd.DataFrame, x: str, y: str, colour, name: str) -> None:
    agg = frame.groupby(x)[y].agg(["mean", "std"]).reset_index()
    ax.plot(agg[x], agg["mean"], color=colour, label=name, lw=1.4)
    if frame["seed"].nunique() > 1:
        ax.fill_between(agg[x], agg["mean"] - agg["std"].fillna(0), agg["mean"] + agg["std"].fillna(0),
                        color=colour, alpha=0.15, lw=0)


def metric_over_epochs(epochs: pd.DataFrame, metric: str, split: str = "test", title: str = "") -> plt.Figure:
    """`metric` against epoch, one line per loss (mean over seeds, band = seed std), one panel per dataset."""
    _check_columns(epochs, ["dataset", "loss", "seed", "epoch", "split", metric], "metric_over_epochs")
    frame = epochs[epochs["split"] == split]
    if frame.empty:
        raise ValueError(f"no rows of split {split!r}; splits present: {sorted(epochs['split'].unique())}")
    datasets = sorted(frame["dataset"].unique())
    palette = loss_palette(loss_order(frame))
    fig, axes = _grid(len(datasets), 3)
    for ax, dataset in zip(axes.flat, datasets, strict=False):
        for loss, colour in palette.items():
            sub = frame[(frame["dataset"] == dataset) & (frame["loss"] == loss)]
            if len(sub):
                _mean_band(ax, sub, "epoch", metric, colour, loss)
        ax.set_title(dataset, loc="left")
        ax.set_xlabel("epoch (0 = untrained head)")
        ax.set_ylabel(label(metric))
    fig.suptitle(title or f"{label(metric)} over training ({split} split)")
    _figure_legend(fig, axes.flat[0])
    return fig


def metric_over_steps(steps: pd.DataFrame, metrics: Sequence[str], smooth: int = 20, logy: Sequence[str] = (),
                      title: str = "") -> plt.Figure:
    """Per-step `metrics` over training, one line per loss (rolling mean over `smooth` steps, then the
    mean over seeds with a seed-std band); rows = metrics, columns = datasets."""
    _check_columns(steps, ["dataset", "loss", "seed", "step", *metrics], "metric_over_steps")
    datasets = sorted(steps["dataset"].unique())
    palette = loss_palette(loss_order(steps))
    fig, axes = plt.subplots(len(metrics), len(datasets), squeeze=False,
                             figsize=(4.2 * len(datasets), 2.8 * len(metrics)))
    smoothed = steps.sort_values("step").copy()
    keys = ["dataset", "loss", "seed"]
    for metric in metrics:
        smoothed[metric] = smoothed.groupby(keys)[metric].transform(
            lambda s: s.rolling(max(1, smooth), min_periods=1).mean())
    for i, metric in enumerate(metrics):
        for j, dataset in enumerate(datasets):
            ax = axes[i, j]
            for loss, colour in palette.items():
                sub = smoothed[(smoothed["dataset"] == dataset) & (smoothed["loss"] == loss)]
                if len(sub) and not sub[metric].isna().all():
                    _mean_band(ax, sub, "step", metric, colour, loss)
            if metric in logy:
                ax.set_yscale("log")
            _readable_ylim(ax)
            ax.set_title(dataset if i == 0 else "", loc="left")
            ax.set_xlabel("step")
            ax.set_ylabel(label(metric))
    if title:
        fig.suptitle(title)
    _figure_legend(fig, axes[0, 0])
    return fig


def scatter_means(summary: pd.DataFrame, x: str, y: str, title: str = "", ax: plt.Axes | None = None) -> plt.Figure:
    """One point per (loss, dataset): the seed means of `x` and `y` with seed-std error bars.

    Marker shape = dataset, colour = loss.
    """
    _check_columns(summary, ["dataset", "loss", x, y], "scatter_means")
    agg = summary.groupby(["dataset", "loss"])[[x, y]].agg(["mean", "std"]).reset_index()
    palette = loss_palette(loss_order(summary))
    markers = dict(zip(sorted(summary["dataset"].unique()), "osD^vP*X", strict=False))
    fig = ax.figure if ax is not None else plt.subplots(figsize=(5.2, 4.0))[0]
    ax = ax if ax is not None else fig.axes[0]
    for _, row in agg.iterrows():
        loss, dataset = row[("loss", "")], row[("dataset", "")]
        ax.errorbar(row[(x, "mean")], row[(y, "mean")], xerr=np.nan_to_num(row[(x, "std")]),
                    yerr=np.nan_to_num(row[(y, "std")]), fmt=markers[dataset], color=palette[loss], ms=6,
                    elinewidth=0.8, capsize=2)
    for loss, colour in palette.items():
        ax.plot([], [], "s", color=colour, label=loss)
    for dataset, marker in markers.items():
        ax.plot([], [], marker, color="0.4", mfc="none", label=dataset)
    ax.set_xlabel(label(x))
    ax.set_ylabel(label(y))
    ax.legend(loc="best", fontsize="x-small", ncol=2)
    if title:
        ax.set_title(title, loc="left")
    fig.tight_layout()
    return fig


def tradeoff(summary: pd.DataFrame, speed: str = "loss_convergence_step",
             granularity: Sequence[str] = ("intra_var", "recall@1")) -> plt.Figure:
    """The efficiency-granularity trade-off: convergence speed (x) against intra-class variance and
    Recall@1 (y), one panel each; points = loss x dataset seed means with seed-std bars."""
    fig, axes = plt.subplots(1, len(granularity), figsize=(5.2 * len(granularity), 4.0), squeeze=False)
    for ax, metric in zip(axes.flat, granularity, strict=True):
        scatter_means(summary, speed, metric, ax=ax, title=f"{label(metric)} vs {label(speed)}")
    fig.suptitle("efficiency (left = faster) against granularity")
    fig.tight_layout()
    return fig


def _pca2(z: np.ndarray) -> np.ndarray:
    zc = z.astype(np.float64) - z.mean(0)
    _, _, vt = np.linalg.svd(zc, full_matrices=False)
    return zc @ vt[:2].T


def embedding_projections(embeddings: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]],
                          max_classes: int = 10, max_points: int = 1500, seed: int = 0,
                          title: str = "") -> plt.Figure:
    """2-D PCA of final embeddings: one row per dataset, one panel per loss, colour = class.

    `embeddings` maps dataset -> loss -> ``(z, y)`` as stored in ``embeddings.npz``; only the first
    `max_classes` classes and at most `max_points` points are drawn. PCA (not t-SNE) keeps distances
    comparable across panels: a tight cluster here is a small intra-class variance.
    """
    if not embeddings or not any(embeddings.values()):
        raise ValueError("embedding_projections needs at least one (z, y) pair")
    datasets = list(embeddings)
    losses = [x for x in LOSSES if any(x in embeddings[d] for d in datasets)]
    losses += sorted({x for d in datasets for x in embeddings[d]} - set(losses))
    fig, axes = plt.subplots(len(datasets), len(losses), squeeze=False,
                             figsize=(2.2 * len(losses), 2.3 * len(datasets)))
    rng = np.random.default_rng(seed)
    for i, dataset in enumerate(datasets):
        for j, name in enumerate(losses):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(dataset)
            if i == 0:
                ax.set_title(name)
            if name not in embeddings[dataset]:
                ax.set_visible(False)
                continue
            z, y = (np.asarray(a) for a in embeddings[dataset][name])
            keep = np.flatnonzero(np.isin(y, np.unique(y)[:max_classes]))
            if len(keep) > max_points:
                keep = np.sort(rng.choice(keep, max_points, replace=False))
            p = _pca2(z[keep])
            ax.scatter(p[:, 0], p[:, 1], c=y[keep] % 10, cmap="tab10", vmin=0, vmax=9, s=2, alpha=0.6, lw=0)
            ax.set_aspect("equal", adjustable="datalim")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def sample_images(images, labels, class_names: Sequence[str]) -> plt.Figure:
    """A grid of images with their class names.

    `images` is a uint8 tensor/array ``[N, C, H, W]`` (or ``[N, H, W]``) or a list of PIL images.
    """
    labels = np.asarray(labels)
    fig, axes = _grid(len(labels), 8, size=(1.3, 1.5))
    for ax, img, lab in zip(axes.flat, images, labels, strict=False):
        img = np.asarray(img.numpy() if hasattr(img, "numpy") else img)
        if img.ndim == 3 and img.shape[0] in (1, 3):
            img = img.transpose(1, 2, 0)
        img = img.squeeze()
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        ax.set_title(str(class_names[int(lab)])[:14], fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    return fig


def feature_projection(x: np.ndarray, y: np.ndarray, title: str = "", max_points: int = 3000,
                       seed: int = 0) -> plt.Figure:
    """2-D PCA of feature vectors (e.g. a frozen backbone's), colour = class (mod 10)."""
    x, y = np.asarray(x), np.asarray(y)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(y), min(max_points, len(y)), replace=False))
    p = _pca2(x[keep])
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    ax.scatter(p[:, 0], p[:, 1], c=y[keep] % 10, cmap="tab10", vmin=0, vmax=9, s=3, alpha=0.6, lw=0)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title, loc="left")
    fig.tight_layout()
    return fig


VERDICT_COLOURS = {"supported": "#1b9e77", "contradicted": "#d95f02", "inconclusive": "0.55"}


def claims_intervals(claims: pd.DataFrame, title: str = "") -> plt.Figure:
    """Each claim's verdict with its interval: the closest pair's paired difference (95% CI), in units
    of the rest member's mean (positive favours the claim), one panel per dataset; a symlog axis
    because differences span decades. Colour = verdict; a claim without an interval is a hollow dot."""
    missing = [c for c in ("claim", "dataset", "verdict", "diff", "ci_low", "ci_high", "ref_mean") if c not in claims]
    if missing:
        raise ValueError(f"claims_intervals needs columns {missing}; the table has {sorted(claims.columns)}")
    if claims.empty:  # e.g. no dataset passed the learned-heads gate, or one seed only
        fig, ax = plt.subplots(figsize=(3.4, 1.0))
        ax.axis("off")
        ax.text(0.5, 0.5, "no claim checked: see the gate table", ha="center", va="center", fontsize="small")
        return fig
    order = list(dict.fromkeys(claims["claim"]))
    datasets = sorted(claims["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), squeeze=False, sharey=True,
                             figsize=(3.4 * len(datasets) + 2.2, 0.32 * len(order) + 1.2))
    for ax, dataset in zip(axes.flat, datasets, strict=True):
        rows = claims[claims["dataset"] == dataset].set_index("claim")
        for i, key in enumerate(order):
            if key not in rows.index:
                continue
            r = rows.loc[key]
            colour = VERDICT_COLOURS.get(r["verdict"], "0.3")
            scale = abs(r["ref_mean"]) if np.isfinite(r["ref_mean"]) and r["ref_mean"] != 0 else 1.0
            if np.isfinite(r["ci_low"]):
                ax.plot([r["ci_low"] / scale, r["ci_high"] / scale], [i, i], color=colour, lw=2.2, solid_capstyle="butt")
                ax.plot([r["diff"] / scale], [i], "o", color=colour, ms=4)
            elif np.isfinite(r["diff"]):
                ax.plot([r["diff"] / scale], [i], "o", mfc="none", color=colour, ms=4)
        ax.axvline(0.0, color="0.2", lw=0.8)
        ax.set_xscale("symlog", linthresh=0.01)
        ax.set_title(dataset, loc="left")
        ax.set_xlabel("paired difference / rest mean")
        ax.set_ylim(len(order) - 0.5, -0.5)
    axes[0, 0].set_yticks(range(len(order)), order)
    for verdict, colour in VERDICT_COLOURS.items():
        axes[0, -1].plot([], [], color=colour, lw=2.2, label=verdict)
    fig.suptitle(title or "claims: closest pair, 95% interval over seeds (right of 0 favours the claim)", fontsize="small")
    _figure_legend(fig, axes[0, -1])
    return fig
