"""Figures of the embedding space itself: how similar positive and negative pairs are, and which
classes each loss retrieves well (notebooks 03 and 05).

In the house style of :mod:`vgcore.report.plots` (print widths, 7-8 pt text, one colour per loss).

- :func:`similarity_distributions`: per dataset, per loss, the cosine similarities of positive pairs
  (same class, above the loss's line) and negative pairs (below it): intra-class spread is how low the
  positives reach, the margin is the gap to the negatives, the overlap is where retrieval can fail.
- :func:`per_class_recall_map`: Recall@1 of each class's queries per loss, one heat map per dataset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from vgcore.report.plots import (
    PAGE_HEIGHT,
    SMALL,
    _figure,
    _note,
    _wrap,
    figure_width,
    loss_order,
    loss_palette,
    plt,
)

SIMILARITY_BINS = 80
"""Histogram bins over the cosine range [-1, 1] (width 0.025)."""


def _ordered(losses) -> list[str]:
    """`losses` in the registry's order (:func:`vgcore.report.plots.loss_order`)."""
    return loss_order(pd.DataFrame({"loss": list(losses)}))


def _density(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Histogram counts over `edges` scaled to a peak of 1 (zeros where there are no values)."""
    counts = np.histogram(values, bins=edges)[0].astype(float)
    return counts / counts.max() if counts.max() > 0 else counts


def similarity_distributions(sims: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]], note: str = "",
                             width: str | float = "page") -> plt.Figure:
    """Cosine similarities of positive and negative pairs: one panel per dataset, one line per loss.

    `sims` maps dataset -> loss -> ``(positive, negative)`` similarities (e.g.
    :func:`vgcore.metrics.pair_similarities`). Above each loss's line the positives' histogram in the
    loss's colour, below it the negatives' in grey, each scaled to its own peak (the shapes compare,
    not the pair counts); a tick marks each median. `note` (e.g. which runs and samples) joins the header.
    """
    datasets = [d for d in sims if sims[d]]
    if not datasets:
        raise ValueError("similarity_distributions needs at least one dataset with one loss")
    page = figure_width(width) >= 5
    cols = min(len(datasets), 3 if page else 1)
    rows = int(np.ceil(len(datasets) / cols))
    order = _ordered({loss for d in datasets for loss in sims[d]})
    palette = loss_palette(order)
    edges = np.linspace(-1.0, 1.0, SIMILARITY_BINS + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    per_loss = min(0.3, (PAGE_HEIGHT - 0.55 - 0.6 * rows) / (rows * len(order)))  # stacked panels fit a page
    fig = _figure(width, rows * (per_loss * len(order) + 0.6) + 0.55)
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False, sharey=True))
    for ax in axes.flat[len(datasets):]:
        ax.set_visible(False)
    for ax, dataset in zip(axes.flat, datasets, strict=False):
        lows = []
        for i, loss in enumerate(order):
            if loss not in sims[dataset]:
                continue
            pos, neg = (np.asarray(v, dtype=float) for v in sims[dataset][loss])
            colour = palette.get(loss, (0.3, 0.3, 0.3))
            if len(pos):
                ax.fill_between(centres, i, i - 0.45 * _density(pos, edges), color=colour, lw=0, step="mid")
                ax.plot([np.median(pos)] * 2, [i, i - 0.45], color="black", lw=0.8)
                lows.append(np.quantile(pos, 0.01))
            if len(neg):
                ax.fill_between(centres, i, i + 0.45 * _density(neg, edges), color="0.6", lw=0, step="mid")
                ax.plot([np.median(neg)] * 2, [i, i + 0.45], color="black", lw=0.8)
                lows.append(np.quantile(neg, 0.01))
            ax.axhline(i, color="0.3", lw=0.4)
        ax.set_title(dataset)
        ax.set_xlim(max(-1.0, min(lows, default=-1.0) - 0.05), 1.0)
        ax.set_xlabel("cosine similarity of a pair")
        ax.grid(axis="y", visible=False)
    axes[0, 0].set_yticks(range(len(order)), order)
    axes[0, 0].set_ylim(len(order) - 0.5, -0.55)
    for ax in axes[:, 0]:
        ax.tick_params(axis="y", labelleft=True)
    _note(fig, ["positive pairs (same class, colour) above each loss's line, negative pairs (grey) below; "
                "each histogram scaled to its own peak; tick: median", note])
    return fig


def per_class_recall_map(frame: pd.DataFrame, class_names: Mapping[str, Sequence[str]] | None = None,
                         note: str = "", width: str | float = "page") -> plt.Figure:
    """Recall@1 per class (columns) and loss (rows), one heat map per dataset, stacked.

    `frame` has columns dataset, loss, class, recall (e.g. the seed mean of
    :func:`vgcore.report.analysis.per_class_recall_frame`). Each dataset has its own colour range
    (the classes' spread is the picture), in a colour-blind-safe sequential map (cividis); values are
    written in the cells where they fit. `class_names` maps dataset -> its class names.
    """
    missing = {"dataset", "loss", "class", "recall"} - set(frame.columns)
    if missing or frame.empty:
        raise ValueError(f"per_class_recall_map needs rows with columns dataset, loss, class, recall; "
                         f"missing {sorted(missing)}" if missing else "per_class_recall_map: the table is empty")
    datasets = sorted(frame["dataset"].unique())
    inches = figure_width(width)
    blocks = []
    for dataset in datasets:
        sub = frame[frame["dataset"] == dataset]
        grid = sub.pivot_table(index="loss", columns="class", values="recall", aggfunc="mean")
        grid = grid.reindex(_ordered(grid.index))
        names = list((class_names or {}).get(dataset) or [])
        labels = [names[c] if c < len(names) else str(c) for c in grid.columns]
        blocks.append((dataset, grid, labels))
    cell = (inches - 1.6) / max(len(g.columns) for _, g, _ in blocks)  # the narrowest heat map's cell width
    upright = cell < 0.55  # class names written upwards where a cell is too narrow for them side by side
    heights = [0.15 * len(g) + (0.45 if len(g.columns) > 12 else 0.95 if upright else 0.75) for _, g, _ in blocks]
    fig = _figure(width, sum(heights) + 0.45)
    subs = np.atleast_1d(fig.subfigures(len(blocks), 1, height_ratios=heights))
    for sub, (dataset, grid, labels) in zip(subs, blocks, strict=True):
        ax = sub.subplots()
        values = grid.to_numpy(float)
        image = ax.imshow(values, aspect="auto", cmap="cividis", interpolation="nearest",
                          vmin=np.nanmin(values), vmax=np.nanmax(values))
        ax.set_yticks(range(len(grid)), list(grid.index))
        few = len(labels) <= 12
        if few:
            ax.set_xticks(range(len(labels)), labels if upright else [_wrap(x, 0.6, SMALL) for x in labels],
                          rotation=90 if upright else 0)
        else:
            step = int(np.ceil(len(labels) / 10))
            ax.set_xticks(range(0, len(labels), step), [labels[i] for i in range(0, len(labels), step)])
            ax.set_xlabel("class")
        ax.grid(False)
        ax.set_title(dataset)
        if few and (inches - 1.6) / len(labels) >= 0.3:
            mid = (np.nanmin(values) + np.nanmax(values)) / 2
            for (r, c), v in np.ndenumerate(values):
                if np.isfinite(v):
                    ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=SMALL,
                            color="black" if v > mid else "white")
        bar = sub.colorbar(image, ax=ax, fraction=0.04, pad=0.01, aspect=12)
        bar.ax.tick_params(labelsize=SMALL)
        bar.set_label("Recall@1", fontsize=SMALL)
    _note(fig, ["Recall@1 of each class's test queries per loss; each dataset has its own colour range", note])
    return fig


__all__ = ["SIMILARITY_BINS", "per_class_recall_map", "similarity_distributions"]
