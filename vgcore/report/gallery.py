"""Retrieval galleries: what each loss retrieves for the same queries.

The averages of Recall@1 and MAP@R hide what a loss gets wrong; a gallery shows it. For a few
fixed queries (the same for every loss) it draws, for each loss, the first ``k`` neighbours of the
query among the run's other eval rows (:func:`vgcore.metrics.neighbours.ranked_neighbours`: cosine,
leave-one-out, ties by the lower index), a wrong neighbour framed:

    g = loss_galleries({loss: load_run(path) for loss, path in ...})
    retrieval_gallery(g.queries, g.ranked, g.y, images=eval_rows(config, labels=g.y), coarse=g.coarse)

- :func:`eval_rows`: the images behind a run's embeddings (its eval split, restricted to its eval rows);
- :func:`gallery_queries`: random queries, ``per_class`` per class; :func:`disagreement_queries`:
  those on which the losses' precision@k differs most;
- :func:`retrieval_gallery`: the figure; :func:`loss_galleries`: neighbours and queries of one
  dataset and seed's runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from vgcore.data.base import Split
from vgcore.report import plots

QUERY, RIGHT, WRONG, NEAR = "query", "right", "wrong", "near"
FRAMES = {QUERY: ("black", "solid"), WRONG: ("#D55E00", "solid"), NEAR: ("#E69F00", (0, (2.0, 1.2)))}
"""Frame (colour, line style) of a tile: the query black, a wrong neighbour vermillion, or with
superclasses dashed orange when it is in the query's superclass (both colour-blind safe); a right
neighbour has none."""
FRAME_PT = 1.6
"""Line width of a frame in points, drawn inside the tile."""
TILE_MIN, TILE_MAX = 0.18, 0.45
"""Side of a tile in inches: blocks of losses wrap onto further lines rather than go below TILE_MIN."""
GAP, BLOCK_GAP, MARGIN = 0.014, 0.06, 0.03
"""Inches between tiles, between a loss's block and the next, and at the figure's edges."""
HEADER, FOOTER = 0.16, 0.12
"""Inches of the line of loss names above each line of blocks, and kept free at the bottom for the
footer :func:`vgcore.report.plots.save_figure` adds."""

Images = Split | Callable[[int], Any] | Any
"""What :func:`retrieval_gallery` draws from: a :class:`~vgcore.data.base.Split` with pictures, a
callable row -> image, or anything indexable by row (a uint8 array or tensor [N, H, W],
[N, C, H, W] or [N, H, W, C]); an image is [H, W], [C, H, W] (C 1 or 3) or [H, W, C], or a PIL image."""


# ---------------------------------------------------------------------------------------------
# rows and queries
# ---------------------------------------------------------------------------------------------

def _option(config, key: str, default=None):
    return config.get(key, default) if isinstance(config, Mapping) else getattr(config, key, default)


def eval_rows(config, data_root=None, labels=None, *, download: bool = False) -> Split | None:
    """The eval split of a run's dataset restricted to the run's eval rows, in the order of its
    ``embeddings.npz`` (:func:`vgcore.train.fixed_subset_index` of ``eval_size``); None when the split
    holds vectors, not pictures (synthetic, custom). `config`: a RunConfig or ``load_run(...)["config"]``.
    `labels`: the run's stored ``y``; ValueError if those rows' labels on disk differ (the data changed).
    """
    from vgcore.data import load_dataset
    from vgcore.train.samplers import fixed_subset_index

    dataset, split = _option(config, "dataset"), _option(config, "eval_split", "test")
    options = {k: v for k, v in (_option(config, "dataset_options") or {}).items() if k != "download"}
    data = load_dataset(dataset, data_root, split, download=download, **options)
    if data.kind == "vectors":
        return None
    keep = fixed_subset_index(len(data), _option(config, "eval_size"))
    rows = data if keep is None else data.subset(keep.tolist())
    if labels is not None:
        _check_labels(rows.labels.numpy(), np.asarray(labels), f"{dataset}/{split}")
    return rows


def given_images(path, eval_size: int | None, n_rows: int) -> np.ndarray:
    """A user's images of a features file's test split (``.npy``, one per row in file order, memory-mapped)
    cut to the rows a run embeds (:func:`vgcore.train.fixed_subset_index` of its ``eval_size``);
    ValueError naming the fix when their count is not the run's `n_rows`."""
    from vgcore.train.samplers import fixed_subset_index

    pictures = np.load(path, mmap_mode="r")
    keep = fixed_subset_index(len(pictures), eval_size)
    pictures = pictures if keep is None else pictures[keep.numpy()]
    if len(pictures) != n_rows:
        raise ValueError(f"{path}: {len(pictures)} images for the {n_rows} test samples the runs embed; save one "
                         "image per row of your features' test split, in its order")
    return pictures


def _check_labels(disk: np.ndarray, run: np.ndarray, what: str) -> None:
    if disk.shape != run.shape:
        raise ValueError(f"the run's embeddings have {len(run)} rows but its eval rows of {what} on disk are "
                         f"{len(disk)}: the data (or the run's eval_size) changed since the run; rerun it")
    differ = np.flatnonzero(disk != run)
    if differ.size:
        i = int(differ[0])
        raise ValueError(f"the labels of the run's eval rows of {what} on disk differ from the run's stored "
                         f"labels in {differ.size} of {len(run)} rows (first: row {i}, disk {disk[i]}, run "
                         f"{run[i]}): the data changed since the run, so its images are not the embedded ones; "
                         "restore the data or rerun")


def gallery_queries(y, per_class: int = 1, seed: int = 0) -> np.ndarray:
    """Row indices of `per_class` random queries per class (fewer where a class has fewer rows),
    drawn with ``numpy.random.default_rng(seed)``, by class then row; a class with a single row
    (nothing right to retrieve) is skipped. The draw depends on `y` only: the same for every loss."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    out: list[int] = []
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        if len(rows) > 1:
            out += sorted(rng.choice(rows, size=min(per_class, len(rows)), replace=False).tolist())
    return np.asarray(out, dtype=np.int64)


def _numpy(a) -> np.ndarray:
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


def disagreement_queries(relevant: Mapping[str, Any], n: int = 4, exclude: Iterable[int] = ()) -> np.ndarray:
    """Row indices of the (at most) `n` queries on which the losses disagree most, most first:
    the standard deviation across losses of each query's precision@k (share of relevant items among
    its k first, ``relevant`` [N, k] bool per loss), ties by the lower row; rows in `exclude` and
    queries on which all losses agree (deviation 0) are left out."""
    if not relevant:
        raise ValueError("disagreement_queries needs the relevant [N, k] arrays of at least one loss")
    precision = np.stack([_numpy(r).astype(bool).mean(axis=1) for r in relevant.values()])
    score = precision.std(axis=0)
    score[np.asarray(list(exclude), dtype=np.int64)] = 0.0
    order = np.argsort(-score, kind="stable")
    return order[score[order] > 0][:n].astype(np.int64)


class LossGalleries(NamedTuple):
    """What :func:`loss_galleries` computes for one dataset and seed's runs."""

    queries: np.ndarray
    """Random queries (:func:`gallery_queries`), row indices of the eval rows."""
    disagreements: np.ndarray
    """The queries the losses disagree on most (:func:`disagreement_queries`), not among `queries`."""
    ranked: dict[str, Any]
    """loss -> its RankedNeighbours (first k neighbours of every eval row, leave-one-out)."""
    y: np.ndarray
    """The eval rows' labels (the same for every loss)."""
    coarse: np.ndarray | None
    """Their superclass labels, or None."""


def loss_galleries(runs: Mapping[str, Mapping], k: int = 4, per_class: int = 1, n_disagree: int = 4,
                   seed: int = 0) -> LossGalleries:
    """The first `k` neighbours of every eval row under each loss's stored embeddings (`runs`: loss ->
    ``load_run(path)`` of one dataset and seed) and the queries to draw; ValueError if the runs'
    labels differ (they did not embed the same rows)."""
    from vgcore.metrics.neighbours import ranked_neighbours

    if not runs:
        raise ValueError("loss_galleries needs at least one run")
    losses = plots.loss_order(pd.DataFrame({"loss": list(runs)}))
    first = losses[0]
    y = np.asarray(runs[first]["embeddings"][1])
    ranked = {}
    for loss in losses:
        z, labels = runs[loss]["embeddings"]
        if not np.array_equal(np.asarray(labels), y):
            raise ValueError(f"the runs of {first!r} and {loss!r} embed different rows (their labels y differ): "
                             "pass the runs of one dataset, eval split and eval_size")
        ranked[loss] = ranked_neighbours(z, y, k)
    queries = gallery_queries(y, per_class, seed)
    hard = disagreement_queries({loss: r.relevant for loss, r in ranked.items()}, n_disagree, exclude=queries)
    coarse = runs[first].get("coarse")
    return LossGalleries(queries, hard, ranked, y, None if coarse is None else np.asarray(coarse))


# ---------------------------------------------------------------------------------------------
# the figure
# ---------------------------------------------------------------------------------------------

def _picture(images: Images, row: int) -> np.ndarray:
    """Image `row` as [H, W] or [H, W, C] for imshow."""
    if isinstance(images, Split):
        if images.kind == "vectors":
            raise ValueError(f"{images!r} holds feature vectors, not pictures: pass images=None for stand-in tiles")
        img = images.get([row])[0]
    else:
        img = images(row) if callable(images) else images[row]
    img = _numpy(img) if hasattr(img, "detach") else np.asarray(img)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[2] not in (1, 3):
        img = img.transpose(1, 2, 0)
    return img.squeeze()


def _ranked(r) -> tuple[np.ndarray, np.ndarray]:
    """(indices, relevant) of a RankedNeighbours or an (indices, relevant) pair."""
    indices, relevant = (r.indices, r.relevant) if hasattr(r, "indices") else r
    return _numpy(indices), _numpy(relevant).astype(bool)


def _state(query: int, item: int, relevant: bool, y: np.ndarray, coarse: np.ndarray | None) -> str:
    if relevant and y[item] == y[query]:
        return RIGHT
    return NEAR if coarse is not None and coarse[item] == coarse[query] else WRONG


class _Layout(NamedTuple):
    per_line: int  # loss blocks on one line
    lines: int  # lines of blocks (each with its own header and all queries)
    tile: float  # inches


def _layout(n_losses: int, k: int, width: float) -> _Layout:
    """As many loss blocks a line as keep tiles >= TILE_MIN, lines balanced, tiles at most TILE_MAX."""
    def tile(b: int) -> float:
        return (width - 2 * MARGIN - b * BLOCK_GAP - b * k * GAP) / (1 + b * k)

    fit = max([b for b in range(1, n_losses + 1) if tile(b) >= TILE_MIN] or [1])
    lines = -(-n_losses // fit)
    per_line = -(-n_losses // lines)
    return _Layout(per_line, lines, min(TILE_MAX, tile(per_line)))


def _frame(ax, state: str, tile: float) -> None:
    """The tile's frame (a patch labelled with its state) inside the axes; spines off."""
    from matplotlib.patches import Rectangle

    for spine in ax.spines.values():
        spine.set_visible(False)
    if state == RIGHT:
        return
    colour, style = FRAMES[state]
    inset = FRAME_PT / 72 / 2 / tile
    ax.add_patch(Rectangle((inset, inset), 1 - 2 * inset, 1 - 2 * inset, transform=ax.transAxes, fill=False,
                           edgecolor=colour, linestyle=style, linewidth=FRAME_PT, label=state, clip_on=False,
                           zorder=5))


def _tile_colours(n: int) -> list[tuple[float, float, float]]:
    """Light colours of the stand-in tiles (halfway to white: black text and the frames stand out)."""
    return [tuple(0.5 + 0.5 * c for c in colour) for colour, _ in plots._class_styles(n)]


def _tile(ax, row: int, state: str, tile: float, y, coarse, images, colours) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    if images is not None:
        img = _picture(images, row)
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    else:
        from matplotlib.patches import Rectangle

        colour = colours[int(coarse[row] if coarse is not None else y[row])]
        inset = 1.6 * FRAME_PT / 72 / tile  # a white gap between the tile and its frame
        ax.add_patch(Rectangle((inset, inset), 1 - 2 * inset, 1 - 2 * inset, transform=ax.transAxes,
                               facecolor=colour, edgecolor="none"))
        text = f"{y[row]}" if coarse is None else f"{y[row]}\ns{coarse[row]}"
        ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=plots.SMALL, color="black", linespacing=0.85,
                transform=ax.transAxes)
    _frame(ax, state, tile)


def _legend(fig, has_coarse: bool, stand_in: bool, k: int, title: str):
    from matplotlib.patches import Patch

    entries = [(QUERY, "query"), (RIGHT, "right class: no frame")]
    entries += [(NEAR, "wrong class, same superclass"), (WRONG, "wrong superclass")] if has_coarse \
        else [(WRONG, "wrong class")]
    handles = [Patch(facecolor="white", edgecolor=FRAMES[s][0] if s in FRAMES else "none",
                     linestyle=FRAMES[s][1] if s in FRAMES else "solid", linewidth=FRAME_PT) for s, _ in entries]
    labels = [text for _, text in entries]
    what = f"each loss's {k} nearest eval rows to the query (cosine, first left)"
    if stand_in:
        what += "; tiles: class" + (" and superclass (s), coloured by superclass" if has_coarse
                                   else ", coloured by class")
    note = "\n".join(plots._wrap(line, fig.get_figwidth() - 0.15, plots.SMALL) for line in (title, what) if line)
    renderer = fig.canvas.get_renderer()
    for ncols in range(len(labels), 0, -1):
        legend = fig.legend(handles, labels, loc="lower left", bbox_to_anchor=(0, 0), ncols=ncols, title=note,
                            alignment="left", fontsize=plots.SMALL, title_fontsize=plots.SMALL,
                            handlelength=1.0, handleheight=1.0)
        if ncols == 1 or legend.get_window_extent(renderer).width / fig.dpi <= fig.get_figwidth() - 0.1:
            return legend
        legend.remove()
    return legend


def retrieval_gallery(queries, ranked: Mapping[str, Any], y, images: Images | None = None, coarse=None,
                      k: int = 4, title: str = "", width: str | float = "page"):
    """One row per query (row indices of the eval rows): the query (black frame), then for each loss
    (registry order) its first `k` neighbours, left to right, under the loss's name; a wrong
    neighbour (not the query's class) framed vermillion, with `coarse` (superclass labels) dashed
    orange when in the query's superclass. `ranked`: loss -> RankedNeighbours (or an
    ``(indices, relevant)`` pair of [N, >= k] arrays). `images`: see :data:`Images`; None draws a
    stand-in tile per item, coloured by superclass (by class without `coarse`) and labelled with its
    class (and superclass). Blocks that would make tiles smaller than TILE_MIN in (about 0.21 in for 7
    losses at page width) wrap onto further lines, each a header and all queries again; the figure
    is as tall as its rows (tile side each) and the legend.
    """
    queries = np.asarray(queries, dtype=np.int64).reshape(-1)
    if queries.size == 0 or not ranked:
        raise ValueError("retrieval_gallery needs at least one query and one loss")
    y = np.asarray(y)
    coarse = None if coarse is None else np.asarray(coarse)
    losses = plots.loss_order(pd.DataFrame({"loss": list(ranked)}))
    arrays = {loss: _ranked(ranked[loss]) for loss in losses}
    for loss, (indices, _) in arrays.items():
        if indices.shape[1] < k:
            raise ValueError(f"{loss}: {indices.shape[1]} neighbours a query ranked, fewer than k={k}")
    inches = plots.figure_width(width)
    lay = _layout(len(losses), k, inches)
    colours = _tile_colours(int((coarse if coarse is not None else y).max()) + 1)

    fig = plots.plt.figure(figsize=(inches, 2.0), layout=None)
    legend = _legend(fig, coarse is not None, images is None, k, title)
    fixed = MARGIN + lay.lines * HEADER + (lay.lines - 1) * BLOCK_GAP + FOOTER \
        + legend.get_window_extent(fig.canvas.get_renderer()).height / fig.dpi + 0.04
    # no taller than a page while tiles stay >= TILE_MIN; the footer sits 1 % of the height above the
    # bottom edge (supxlabel's default)
    fit = (plots.PAGE_HEIGHT * 0.99 - fixed) / (lay.lines * len(queries)) - GAP
    lay = lay._replace(tile=max(TILE_MIN, min(lay.tile, fit)))
    step = lay.tile + GAP
    line_h = HEADER + len(queries) * step
    height = (fixed + lay.lines * len(queries) * step) / 0.99
    fig.set_size_inches(inches, height)
    legend.set_bbox_to_anchor((0, FOOTER / height + 0.01))

    def place(left: float, top: float):  # inches from the left and the top
        return fig.add_axes((left / inches, 1 - (top + lay.tile) / height, lay.tile / inches, lay.tile / height))

    for line in range(lay.lines):
        top = MARGIN + line * (line_h + BLOCK_GAP)
        block_losses = losses[line * lay.per_line:(line + 1) * lay.per_line]
        fig.text(MARGIN / inches, 1 - (top + HEADER / 2) / height, "query", fontsize=plots.SMALL, va="center")
        for i, q in enumerate(queries):
            ax = place(MARGIN, top + HEADER + i * step)
            _tile(ax, int(q), QUERY, lay.tile, y, coarse, images, colours)
            ax.set_gid(f"query/{int(q)}")
        for b, loss in enumerate(block_losses):
            left = MARGIN + lay.tile + BLOCK_GAP + b * (k * step + BLOCK_GAP)
            block_w = k * step - GAP
            chars = max(4, int(block_w * 72 / (0.55 * plots.SMALL)))
            name = loss if len(loss) <= chars else loss[: chars - 1] + "…"
            fig.text((left + block_w / 2) / inches, 1 - (top + HEADER / 2) / height, name, fontsize=plots.SMALL,
                     ha="center", va="center")
            indices, relevant = arrays[loss]
            for i, q in enumerate(queries):
                for j in range(k):
                    item = int(indices[q, j])
                    ax = place(left + j * step, top + HEADER + i * step)
                    _tile(ax, item, _state(int(q), item, bool(relevant[q, j]), y, coarse), lay.tile, y, coarse,
                          images, colours)
                    ax.set_gid(f"{loss}/{int(q)}/{j}")
    return fig


# ---------------------------------------------------------------------------------------------
# a profile's galleries (notebook 05)
# ---------------------------------------------------------------------------------------------

QUERY_CLASSES = 10
"""A random-query gallery draws the queries of at most this many classes (the first ones)."""


def gallery_datasets(datasets: Iterable[str]) -> tuple[str, str | None]:
    """``(pictured, stand_in)`` of a profile's datasets: the first whose samples are pictures
    (:func:`vgcore.data.has_pictures`; else the first), and the first that has none (None when every
    dataset has pictures), whose gallery shows the stand-in tiles."""
    from vgcore.data import has_pictures
    from vgcore.report.outputs import picture_datasets

    datasets = list(datasets)
    if not datasets:
        raise ValueError("gallery_datasets needs at least one dataset")
    return picture_datasets(datasets)[0], next((d for d in datasets if not has_pictures(d)), None)


def dataset_gallery(runs: Mapping[str, Mapping], which: str = "random", data_root=None, k: int = 4,
                    width: str | float = "page"):
    """The gallery of one dataset and seed's `runs` (loss -> ``load_run(path)``): ``which="random"``,
    one random query for each of the first :data:`QUERY_CLASSES` classes; ``"disagreement"``, the four
    queries on which the losses' precision@k differs most (a one-line note figure where they all agree).
    Pictures come from the eval split on disk (:func:`eval_rows`); where it holds vectors, or its files
    are not here, the stand-in tiles are drawn and the title says why."""
    from vgcore.data import DataNotFoundError

    if which not in ("random", "disagreement"):
        raise ValueError(f"which must be 'random' or 'disagreement', got {which!r}")
    g = loss_galleries(runs, k=k)
    config = next(iter(runs.values()))["config"]
    dataset, seed = _option(config, "dataset"), _option(config, "seed")
    try:
        images, missing = eval_rows(config, data_root, labels=g.y), ""
    except DataNotFoundError:
        images, missing = None, f" (the {dataset} images are not on disk: class marks instead)"
    queries = g.queries[np.isin(g.y[g.queries], np.unique(g.y)[:QUERY_CLASSES])] if which == "random" \
        else g.disagreements
    what = (f"one random test query for each of {min(QUERY_CLASSES, len(np.unique(g.y)))} classes"
            if which == "random" else "the test queries on which the losses disagree most")
    title = f"{dataset}, seed {seed}: {what}{missing}"
    if queries.size == 0:
        fig = plots._figure(width, 0.6)
        plots._note(fig, [f"{dataset}, seed {seed}: every loss retrieves alike (the same precision@{k}) on every "
                          "query, so no query shows a disagreement"])
        return fig
    return retrieval_gallery(queries, g.ranked, g.y, images=images, coarse=g.coarse, k=k, title=title, width=width)


def no_stand_in(datasets: Iterable[str], width: str | float = "page"):
    """The note figure a profile whose datasets all have pictures writes where a stand-in gallery would go."""
    fig = plots._figure(width, 0.6)
    plots._note(fig, [f"every dataset of this profile ({', '.join(datasets)}) has pictures: no stand-in gallery "
                      "(see the picture galleries)"])
    return fig
