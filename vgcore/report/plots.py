"""Figure functions the notebooks call, in one house style sized for print (headless: Agg; in Jupyter: inline).

The house style (:func:`use_style`): every figure is drawn at the width it will be printed at,
``width="column"`` (3.4 in, one ICASSP/IEEE column) or ``"page"`` (7 in, the full text width), with
8-pt text (7-pt ticks and legends, a 6-pt footer), a layout that keeps every label inside the figure
(matplotlib's constrained layout, no cropping at save time), and is saved as a vector PDF (TrueType
fonts, as IEEE's PDF checks want) and a 300-dpi PNG (:func:`save_figure`).

Every function takes tables in the schema of `vgcore.results.collect` (``summary``, ``epochs`` or
``steps``) and returns a matplotlib Figure. Conventions:

- labels come from the one label table, `vgcore.metrics.LABELS` ("name [unit]");
- one fixed colour per loss (:func:`loss_palette`), a variant in its loss's colour with its own marker
  and line style, losses in the registry's order;
- a spread is named where it is drawn: "mean ± std over n seeds" (or the claims' 95% interval);
- no forced zero: an axis spans the data, so 0.80 against 0.85 shows; an axis whose positive values
  span two decades or more is logarithmic;
- a metric that is constant across losses (:func:`vgcore.report.claims.is_constant`) gets a one-line
  note instead of a panel: it says nothing about the losses.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

try:
    import matplotlib.pyplot as plt
    import seaborn as sns
except ImportError as err:  # a core install (`pip install vgcore`) has neither: the figures are the notebooks'
    raise ImportError(f"vgcore.report.plots draws with matplotlib and seaborn ({err}): "
                      "pip install 'vgcore[notebooks]'") from err

from vgcore.metrics import is_share, label
from vgcore.registry import VARIANTS, names
from vgcore.report.claims import CONSTANT_RTOL, is_constant
from vgcore.results import PROGRESS

LOSSES = names("loss")

STEP_LOSS = "train_loss"
"""Column of the per-step loss value in steps.csv (``loss`` names the loss function)."""

WIDTHS = {"column": 3.4, "page": 7.0}
"""Printed widths in inches: one column and the full text width of an ICASSP (IEEE two-column) paper."""
FONT, SMALL, FOOTER = 8, 7, 6
"""Text sizes in points: labels and titles, ticks and legends, the footer naming the notebook."""
DPI = 300
"""Resolution of the PNGs (the PDFs are vector)."""
PAGE_HEIGHT = 9.2
"""Inches a figure may take at most: an IEEE page's text height (about 9.5 in), less a caption line."""
DECADES = 2.0
"""An axis whose positive values span at least this many decades is logarithmic."""
SHARED_MIN_FILL = 0.25
"""A metric's panels share one range across datasets unless a dataset's values would fill less than
this share of it (on a log axis: of its decades); then each keeps its own and the figure says so."""

VERDICT_COLOURS = {"supported": "#1b9e77", "significant, size uncertain": "#8fd1bb", "negligible": "#7570b3",
                   "inconclusive": "0.55", "contradicted, size uncertain": "#f2b27f", "contradicted": "#d95f02"}
"""Colour of each verdict of vgcore.report.claims (its ORDER, strongest support first)."""


# ---------------------------------------------------------------------------------------------
# style, sizes, colours
# ---------------------------------------------------------------------------------------------

def use_style() -> None:
    """The house style: print-sized text, light grid, TrueType fonts in PDFs, 300-dpi PNGs."""
    sns.set_theme(style="whitegrid", context="paper")
    plt.rcParams.update({
        "font.size": FONT, "axes.titlesize": FONT, "axes.labelsize": FONT, "figure.titlesize": FONT,
        "figure.labelsize": FONT, "xtick.labelsize": SMALL, "ytick.labelsize": SMALL, "legend.fontsize": SMALL,
        "legend.title_fontsize": SMALL, "axes.titlelocation": "left", "axes.linewidth": 0.6,
        "grid.linewidth": 0.4, "grid.color": "0.88", "lines.linewidth": 1.1, "lines.markersize": 3.5,
        "xtick.major.size": 2.5, "ytick.major.size": 2.5, "xtick.major.pad": 2, "ytick.major.pad": 2,
        "legend.frameon": False, "legend.handlelength": 1.4, "legend.columnspacing": 1.0,
        "figure.dpi": 150, "savefig.dpi": DPI, "savefig.bbox": None, "pdf.fonttype": 42, "ps.fonttype": 42,
        "figure.constrained_layout.use": False,
    })


def figure_width(width: str | float) -> float:
    """Inches of a named width ("column", "page") or a number of inches."""
    if isinstance(width, str):
        if width not in WIDTHS:
            raise ValueError(f"unknown width {width!r}; choose one of: {', '.join(WIDTHS)} (or inches)")
        return WIDTHS[width]
    return float(width)


def _ncols(width: str | float, page: int, column: int) -> int:
    return page if figure_width(width) >= 5 else column


def loss_palette(losses: Sequence[str] = LOSSES) -> dict[str, tuple[float, float, float]]:
    """One fixed colour per loss (colour-blind palette, in registry order); a named variant takes the
    colour of the loss it is a variant of and is told apart by :func:`loss_marker` and
    :func:`loss_linestyle`."""
    base = [x for x in LOSSES if x not in VARIANTS]
    fixed = dict(zip(base, sns.color_palette("colorblind", len(base)), strict=True))
    fixed.update({variant: fixed[of] for variant, of in VARIANTS.items()})
    return {loss: fixed[loss] for loss in losses if loss in fixed}


_VARIANT_MARKERS, _VARIANT_LINES = ("s", "^", "D"), ("--", ":", "-.")


def _variant_index(loss: str) -> int:
    """0 for a loss, k for the k-th variant (registry order) of the loss it is a variant of."""
    if loss not in VARIANTS:
        return 0
    return [v for v, of in VARIANTS.items() if of == VARIANTS[loss]].index(loss) + 1


def loss_marker(loss: str) -> str:
    """Circles for a loss; its variants: squares, triangles, diamonds."""
    k = _variant_index(loss)
    return "o" if k == 0 else _VARIANT_MARKERS[(k - 1) % len(_VARIANT_MARKERS)]


def loss_linestyle(loss: str) -> str:
    """Solid for a loss; its variants: dashed, dotted, dash-dotted."""
    k = _variant_index(loss)
    return "-" if k == 0 else _VARIANT_LINES[(k - 1) % len(_VARIANT_LINES)]


def loss_order(frame: pd.DataFrame) -> list[str]:
    present = set(frame["loss"])
    return [x for x in LOSSES if x in present] + sorted(present - set(LOSSES))


def _check_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} needs columns {missing}; the table has {sorted(frame.columns)}")
    if frame.empty:
        raise ValueError(f"{what}: the table is empty (no complete runs collected?)")


def _wrap(text: str, inches: float, size: float = FONT) -> str:
    """`text` broken into lines that fit `inches` at `size` points (DejaVu Sans: about 0.55 em a character)."""
    chars = max(8, int(inches * 72 / (0.55 * size)))
    return "\n".join(textwrap.wrap(text, chars, break_on_hyphens=False)) if len(text) > chars else text


def _figure(width: str | float, height: float) -> plt.Figure:
    return plt.figure(figsize=(figure_width(width), height), layout="constrained")


def _grid(fig: plt.Figure, rows: int, cols: int, **kw) -> np.ndarray:
    return np.atleast_2d(fig.subplots(rows, cols, squeeze=False, **kw))


def _spans_decades(values) -> bool:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return len(v) > 1 and bool((v > 0).all()) and np.log10(v.max() / v.min()) >= DECADES


def _seed_note(frame: pd.DataFrame, what: str = "dot: mean; bar: ± 1 std") -> str:
    n = frame.groupby(["dataset", "loss"])["seed"].nunique() if "seed" in frame else pd.Series([1])
    lo, hi = int(n.min()), int(n.max())
    seeds = f"{lo} seed{'s' if hi > 1 else ''}" if lo == hi else f"{lo}-{hi} seeds"
    return f"{what} over {seeds}"


def _note(fig, lines: Sequence[str], handles=(), labels=()) -> None:
    """The header above the panels: the note (what the spread is, which metrics were constant) and,
    when given, the legend, whose title the note becomes (one block: the layout stacks nothing else
    at the top), in as many columns as fit the width."""
    inches = fig.get_figwidth() if hasattr(fig, "get_figwidth") else fig.figure.get_figwidth()
    text = "\n".join(_wrap(line, inches - 0.15, SMALL) for line in lines if line)
    if not handles:
        if text:
            fig.suptitle(text, x=0.01, ha="left", fontsize=SMALL, color="0.25")
        return
    # as many columns as fit the width, measured: columns are as wide as their longest label, so with
    # 11 losses three or four columns fit where an estimate from the longest label alone allows two
    renderer = fig.figure.canvas.get_renderer() if hasattr(fig, "figure") and fig.figure is not None \
        else fig.canvas.get_renderer()
    for ncols in range(len(labels), 0, -1):
        legend = fig.legend(list(handles), list(labels), loc="outside upper center", ncols=ncols,
                            title=text or None, alignment="left")
        if ncols == 1 or legend.get_window_extent(renderer).width / fig.dpi <= inches - 0.1:
            return
        legend.remove()


def _constant_panel(ax: plt.Axes, text: str) -> None:
    ax.axis("off")
    width = ax.figure.get_figwidth() * ax.get_position().width
    ax.text(0.5, 0.5, _wrap(text, max(width, 0.8), SMALL), ha="center", va="center", fontsize=SMALL,
            color="0.3", transform=ax.transAxes)


def _loss_handles(palette: Mapping[str, tuple]) -> tuple[list, list[str]]:
    handles = [plt.Line2D([], [], color=c, marker=loss_marker(x), ls=loss_linestyle(x), lw=1.2, ms=3.5)
               for x, c in palette.items()]
    return handles, list(palette)


def stamp(fig: plt.Figure, text: str) -> None:
    """A 6-pt footer at the bottom right, below everything else (the layout keeps room for it)."""
    fig.supxlabel(text, x=0.995, ha="right", fontsize=FOOTER, color="0.45")


def save_figure(fig: plt.Figure, stem: str | os.PathLike, notebook: str, profile: str | None = None,
                runs: str | None = None) -> list[Path]:
    """Write `fig` at its printed size as <stem>.pdf (vector) and <stem>.png (300 dpi) with a footer
    naming `notebook` (``notebooks/<notebook>``, or a command when `notebook` starts with
    ``python -m``), `profile` and the digest of the `runs` it was drawn from
    (:func:`vgcore.results.runs_digest`); close it.

    The PDF carries no creation date and the PNG no timestamp, so an unchanged figure rewrites the
    same bytes (clean diffs of the committed demo figures).
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    source = notebook if notebook.startswith("python -m") else f"notebooks/{notebook}"
    stamp(fig, f"vgcore · {source}" + (f" · profile {profile}" if profile else "")
          + (f", runs {runs}" if runs else ""))
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=DPI, metadata={"Software": None})
    fig.savefig(paths[1], metadata={"CreationDate": None, "Creator": None, "Producer": None})
    plt.close(fig)
    return paths


# ---------------------------------------------------------------------------------------------
# one run (notebook 02)
# ---------------------------------------------------------------------------------------------

_ACTIVE = ("active_ratio", "grad_active_ratio", "grad_effective_share", "tuple_active_ratio")


def run_curves(steps: pd.DataFrame, epochs: pd.DataFrame, title: str = "", smooth: int = 10,
               eval_split: str = "test", width: str | float = "page") -> plt.Figure:
    """One run's curves: loss, active ratios and gradient norm per step; variance and Recall@1 per epoch.

    `steps` and `epochs` are the run's ``steps.csv`` and ``epochs.csv``; step curves are a rolling
    mean over `smooth` rows with the raw values faint behind; epoch curves are solid for the
    evaluation split and dashed for the training subset.
    """
    _check_columns(steps, ["step", STEP_LOSS, "active_ratio", "grad_norm"], "run_curves(steps)")
    _check_columns(epochs, ["epoch", "split", "intra_var", "inter_var", "recall@1"], "run_curves(epochs)")
    cols = _ncols(width, 3, 2)
    rows = int(np.ceil(6 / cols))
    fig = _figure(width, 1.6 * rows + 0.9)
    axes = _grid(fig, rows, cols).flat
    window = max(1, min(smooth, len(steps) // 4 or 1))
    colours = dict(zip((STEP_LOSS, *_ACTIVE, "grad_norm"), sns.color_palette("colorblind", 6), strict=True))
    handles: dict[str, object] = {}

    def step_panel(ax, series, ylabel, logy=False):
        for col in series:
            if col not in steps or steps[col].isna().all():
                continue
            raw = steps[col].to_numpy(float)
            line, = ax.plot(steps["step"], pd.Series(raw).rolling(window, min_periods=1).mean(), color=colours[col])
            ax.plot(steps["step"], raw, color=colours[col], alpha=0.2, lw=0.5)
            if len(series) > 1:
                handles[label(col, unit=False)] = line
        ax.set_xlabel("training step")
        ax.set_ylabel(_wrap(ylabel, 1.1))
        if logy:
            ax.set_yscale("log")

    step_panel(axes[0], [STEP_LOSS], label(STEP_LOSS))
    step_panel(axes[1], _ACTIVE, "active ratio [fraction of batch]")
    axes[1].set_ylim(-0.03, 1.05)
    step_panel(axes[2], ["grad_norm"], label("grad_norm"), logy=_spans_decades(steps["grad_norm"]))
    for ax, metric in zip(axes[3:6], ("intra_var", "inter_var", "recall@1"), strict=True):
        for split, frame in epochs.groupby("split", sort=True):
            if str(split).startswith(PROGRESS):  # the log-spaced progress steps are not epochs
                continue
            frame = frame.sort_values("epoch")
            line, = ax.plot(frame["epoch"], frame[metric], marker="o", ms=2.5, color="0.25",
                            ls="-" if split == eval_split else "--")
            handles[f"{str(split).replace('_', ' ')} split (per epoch)"] = line
        ax.set_xlabel("epoch")
        ax.set_ylabel(_wrap(label(metric), 1.1))
    _note(fig, [title, f"per step: rolling mean over {window} steps (faint: raw); epoch 0: the untrained head"],
          list(handles.values()), list(handles))
    return fig


# ---------------------------------------------------------------------------------------------
# across runs (notebooks 03-06)
# ---------------------------------------------------------------------------------------------

def _loss_stats(frame: pd.DataFrame, metric: str, order: Sequence[str]) -> pd.DataFrame:
    stats = frame.groupby("loss")[metric].agg(["mean", "std", "count"]).reindex(order)
    return stats.dropna(subset=["mean"])


def _drawn_metrics(frame: pd.DataFrame, metrics: Sequence[str], datasets: Sequence[str],
                   constant: dict[tuple[str, str], bool]) -> tuple[list[str], list[str]]:
    """The metrics to draw, those not constant across losses on every dataset (``constant[(dataset,
    metric)]``), and a note for each one left out, with its range of values in `frame`."""
    shown = [m for m in metrics if not all(constant[(d, m)] for d in datasets)]
    notes = [f"{label(m, unit=False)}: constant across losses on every dataset "
             f"({np.nanmin(frame[m].to_numpy(float)):.4g} to {np.nanmax(frame[m].to_numpy(float)):.4g}), not drawn."
             for m in metrics if m not in shown]
    return shown, notes


def metric_dots(summary: pd.DataFrame, metrics: Sequence[str], title: str = "",
                width: str | float = "page") -> plt.Figure:
    """Each metric per loss as a dot (seed mean) with a ± 1 std bar and faint single-seed dots; losses
    down the y-axis, one row of panels per dataset. The x-axis spans the data (no forced zero), and is
    logarithmic where the values span decades; a metric constant across losses gets a note, not a panel.
    """
    _check_columns(summary, ["dataset", "loss", "seed", *metrics], "metric_dots")
    datasets = sorted(summary["dataset"].unique())
    order = loss_order(summary)
    palette = loss_palette(order)
    constant = {(d, m): is_constant(_loss_stats(summary[summary["dataset"] == d], m, order)["mean"])
                for d in datasets for m in metrics}
    shown, left_out = _drawn_metrics(summary, metrics, datasets, constant)
    apart = [m for m in shown if len(datasets) > 1 and _squeezed(summary, m)]
    notes = [_seed_note(summary), *left_out,
             *(f"{label(m, unit=False)}: each dataset on its own x range (one range would squeeze a row)."
               for m in apart)]
    if not shown:
        fig = _figure(width, 0.8)
        _note(fig, notes)
        return fig
    # panels side by side up to 4 (page) or 2 (column) a row; more (column: up to 3) where the rows of
    # all datasets would not fit a page, then rows a little tighter (not below 7-pt tick spacing)
    header = 0.25 + 0.14 * len(notes)

    def xlabel(metric: str, cols: int) -> str:
        return _wrap(label(metric), (figure_width(width) - 0.9) / cols - 0.1, FONT)

    def panel_h(cols: int, per_loss: float) -> float:  # dots, then ticks, title and the longest x label
        lines = max(xlabel(m, cols).count("\n") + 1 for m in shown)
        return per_loss * len(order) + 0.28 + 0.135 * lines

    cols = min(len(shown), _ncols(width, 4, 2))
    while cols < min(len(shown), _ncols(width, 4, 3)) and \
            np.ceil(len(shown) / cols) * len(datasets) * panel_h(cols, 0.16) + header > PAGE_HEIGHT:
        cols += 1
    per_dataset = int(np.ceil(len(shown) / cols))
    rows = per_dataset * len(datasets)
    height = max(panel_h(cols, 0.125), min(panel_h(cols, 0.16), (PAGE_HEIGHT - header) / rows))
    fig = _figure(width, height * rows + header)
    axes = _grid(fig, rows, cols, sharey=True)
    y = {loss: i for i, loss in enumerate(order)}
    jitter = np.random.default_rng(0)
    drawn: dict[str, list] = {}  # metric -> its drawn panels
    for i, dataset in enumerate(datasets):
        frame = summary[summary["dataset"] == dataset]
        for j in range(per_dataset * cols):
            ax = axes[i * per_dataset + j // cols, j % cols]
            if j >= len(shown):
                ax.set_visible(False)
                continue
            metric = shown[j]
            stats = _loss_stats(frame, metric, order)
            if j == 0:
                ax.set_title(dataset)
            if constant[(dataset, metric)]:
                _constant_panel(ax, f"{label(metric, unit=False)}: {stats['mean'].iloc[0]:.4g} for every loss "
                                    "(constant, not compared)")
                continue
            for loss, row in stats.iterrows():
                seeds = frame.loc[frame["loss"] == loss, metric].to_numpy(float)
                ax.plot(seeds, y[loss] + jitter.uniform(-0.18, 0.18, len(seeds)), loss_marker(loss),
                        color=palette[loss], ms=1.8, alpha=0.45, mew=0)
                ax.errorbar(row["mean"], y[loss], xerr=0 if np.isnan(row["std"]) else row["std"], fmt=loss_marker(loss),
                            color=palette[loss], ms=3.5, elinewidth=1.1, capsize=1.5)
            if _spans_decades(summary[metric]):  # one scale per metric, whatever the dataset
                ax.set_xscale("log")
            ax.margins(x=0.08)
            ax.set_xlabel(xlabel(metric, cols))
            ax.grid(axis="y", visible=False)
            drawn.setdefault(metric, []).append(ax)
    _share_limits({m: a for m, a in drawn.items() if m not in apart}, "x")
    axes[0, 0].set_yticks(range(len(order)), order)
    axes[0, 0].set_ylim(len(order) - 0.5, -0.5)
    for ax in axes[:, 0]:
        ax.tick_params(axis="y", labelleft=True)
    if title:
        notes.insert(0, title)
    _note(fig, notes)
    return fig


def _squeezed(frame: pd.DataFrame, metric: str, by: str = "dataset") -> bool:
    """Whether one range for `metric` across the groups of `by` would leave a group's values filling
    less than SHARED_MIN_FILL of it (of its decades where the axis is logarithmic)."""
    v = frame[metric].to_numpy(float)
    log = _spans_decades(v)
    width = (lambda x: np.log10(np.nanmax(x) / np.nanmin(x))) if log else (lambda x: np.nanmax(x) - np.nanmin(x))  # noqa: E731
    whole = width(v)
    return bool(whole > 0 and min(width(g[metric].to_numpy(float)) for _, g in frame.groupby(by)) < SHARED_MIN_FILL * whole)


def _share_limits(panels: Mapping[str, list], axis: str) -> None:
    """Give each metric's panels one range, the union of theirs, so a metric reads alike on every dataset."""
    for axes in panels.values():
        get = [ax.get_xlim() if axis == "x" else ax.get_ylim() for ax in axes]
        lo, hi = min(a for a, _ in get), max(b for _, b in get)
        for ax in axes:
            (ax.set_xlim if axis == "x" else ax.set_ylim)(lo, hi)


def _mean_band(ax, frame: pd.DataFrame, x: str, y: str, colour, name: str) -> None:
    agg = frame.groupby(x)[y].agg(["mean", "std"]).reset_index()
    ax.plot(agg[x], agg["mean"], color=colour, ls=loss_linestyle(name), label=name)
    if frame["seed"].nunique() > 1:
        ax.fill_between(agg[x], agg["mean"] - agg["std"].fillna(0), agg["mean"] + agg["std"].fillna(0),
                        color=colour, alpha=0.15, lw=0)


def _dataset_panels(frame: pd.DataFrame, width: str | float):
    """One titled panel per dataset of ``frame`` (extra grid cells hidden): the figure, a list of
    ``(axes, that dataset's rows)``, the loss palette and the number of panel columns."""
    datasets = sorted(frame["dataset"].unique())
    palette = loss_palette(loss_order(frame))
    cols = min(len(datasets), _ncols(width, 3, 2))
    rows = int(np.ceil(len(datasets) / cols))
    fig = _figure(width, 1.9 * rows + 0.9)
    axes = _grid(fig, rows, cols)
    for ax in axes.flat[len(datasets):]:
        ax.set_visible(False)
    panels = []
    for ax, dataset in zip(axes.flat, datasets, strict=False):
        ax.set_title(dataset)
        panels.append((ax, frame[frame["dataset"] == dataset]))
    return fig, panels, palette, cols


def metric_over_epochs(epochs: pd.DataFrame, metric: str, split: str = "test", title: str = "",
                       width: str | float = "page") -> plt.Figure:
    """`metric` against epoch, one line per loss (mean over seeds, band = ± 1 std), one panel per dataset."""
    _check_columns(epochs, ["dataset", "loss", "seed", "epoch", "split", metric], "metric_over_epochs")
    frame = epochs[epochs["split"] == split]
    if frame.empty:
        raise ValueError(f"no rows of split {split!r}; splits present: {sorted(epochs['split'].unique())}")
    fig, panels, palette, cols = _dataset_panels(frame, width)
    for ax, sub in panels:
        if is_constant(sub[metric]):
            _constant_panel(ax, f"{label(metric, unit=False)}: {sub[metric].iloc[0]:.4g} for every loss "
                                "(constant, not compared)")
            continue
        for loss, colour in palette.items():
            one = sub[sub["loss"] == loss]
            if len(one):
                _mean_band(ax, one, "epoch", metric, colour, loss)
        ax.set_xlabel("epoch")
        ax.set_ylabel(_wrap(label(metric), 1.3))
        if _spans_decades(sub[metric]):
            ax.set_yscale("log")
    _note(fig, [title or f"{label(metric, unit=False)} over training ({split} split)",
                _seed_note(frame, "line: mean; band: ± 1 std") + "; epoch 0: the untrained head"],
          *_loss_handles(palette))
    return fig


def validation_progress(epochs: pd.DataFrame, fraction: float = 0.9, width: str | float = "page") -> plt.Figure:
    """Normalised validation progress (:func:`vgcore.report.analysis.normalised_progress`) against the
    training step (log scale), one line per loss (mean over seeds, band = ± 1 std), one panel per
    dataset; the dotted line is the ``fraction`` that ``val_convergence_step`` reads."""
    from vgcore.report.analysis import normalised_progress

    frame = normalised_progress(epochs)
    if frame.empty:  # e.g. heads that never rose above their untrained Recall@1: a note, not a failed build
        fig = _figure(width, 0.8)
        _note(fig, ["normalised validation progress: no run's validation Recall@1 rose above its untrained "
                    "value, so there is no progress to normalise"])
        return fig
    fig, panels, palette, cols = _dataset_panels(frame, width)
    for ax, sub in panels:
        for loss, colour in palette.items():
            one = sub[sub["loss"] == loss]
            if len(one):
                _mean_band(ax, one, "step", "progress", colour, loss)
        ax.axhline(fraction, color="0.4", ls=":", lw=0.8)
        _log_steps(ax, float(sub["step"].max()))
        ax.set_xlabel(_wrap("training step (log scale)", figure_width(width) / cols - 0.5))
        ax.set_ylabel(_wrap("validation Recall@1 progress (R_t - R_0) / (R_final - R_0)", 1.3))
    _note(fig, ["one yardstick for every loss: normalised validation progress at log-spaced steps",
                _seed_note(frame, "line: mean; band: ± 1 std") + f"; dotted: {fraction:.0%} (val_convergence_step)"],
          *_loss_handles(palette))
    return fig


def _log_steps(ax: plt.Axes, last: float) -> None:
    """A step axis from 0 to `last` that is logarithmic above 1 (symlog), ticked at 0 and at the
    powers of ten (the linear band below 1 holds step 0 only: no negative steps, no crowded ticks)."""
    ax.set_xscale("symlog", linthresh=1, linscale=0.5)
    ax.set_xlim(0, max(last, 1.0))
    powers = range(int(np.floor(np.log10(max(last, 1.0)))) + 1)
    names = {0: "1", 1: "10"}
    ax.set_xticks([0.0, *(10.0**k for k in powers)],
                  ["0", *(names.get(k, f"10{'⁰¹²³⁴⁵⁶⁷⁸⁹'[k]}") for k in powers)])
    ax.xaxis.set_minor_locator(plt.NullLocator())


def _binned(steps: pd.DataFrame, metrics: Sequence[str], bins: int) -> pd.DataFrame:
    """Per dataset, steps cut into `bins` equal ranges; each run's mean of `metrics` in each (x = range centre)."""
    out = []
    for _, sub in steps.groupby("dataset", sort=True):
        top = float(sub["step"].max()) + 1
        edges = np.linspace(0, top, bins + 1)
        which = np.clip(np.searchsorted(edges, sub["step"].to_numpy(float), side="right") - 1, 0, bins - 1)
        grouped = sub.assign(_bin=which).groupby(["dataset", "loss", "seed", "_bin"], sort=True)[list(metrics)].mean()
        grouped = grouped.reset_index()
        grouped["step"] = (edges[grouped["_bin"]] + edges[grouped["_bin"] + 1]) / 2
        out.append(grouped.drop(columns="_bin"))
    return pd.concat(out, ignore_index=True)


def saturated_losses(binned: pd.DataFrame, metric: str) -> list[str]:
    """The losses whose `metric`, a share in [0, 1] (:func:`vgcore.metrics.is_share`), is 1 in every step
    range of `binned` (one dataset's rows) up to :data:`~vgcore.report.claims.CONSTANT_RTOL`: lines that
    would all lie on the top edge."""
    if not is_share(metric):
        return []
    lowest = binned.groupby("loss")[metric].min()
    return [loss for loss in loss_order(binned) if loss in lowest and lowest[loss] >= 1 - CONSTANT_RTOL]


def _saturated_notes(saturated: dict[tuple[str, str], list[str]], binned: pd.DataFrame) -> list[str]:
    """One header line per panel with losses at 1.0 throughout: who, or who not where that is shorter."""
    lines = []
    for (dataset, metric), losses in saturated.items():
        if not losses:
            continue
        rest = [x for x in loss_order(binned[binned["dataset"] == dataset]) if x not in losses]
        who = ", ".join(losses) if len(rest) >= len(losses) or not rest else f"all but {', '.join(rest)}"
        lines.append(f"{label(metric, unit=False)} on {dataset}: {who}.")
    return ["At 1.0 throughout, so not drawn:", *lines] if lines else []


def metric_over_steps(steps: pd.DataFrame, metrics: Sequence[str], bins: int = 60, logy: Sequence[str] = (),
                      title: str = "", width: str | float = "page") -> plt.Figure:
    """Per-step `metrics` over training, one line per loss: each run's steps averaged in `bins` equal
    ranges of steps, then mean over seeds with a ± 1 std band; rows = metrics, columns = datasets. A
    metric constant across losses (a saturated ratio) gets a note instead of its panel; a panel of a
    share spans [0, 1], and the losses at 1.0 throughout (:func:`saturated_losses`) are named in a
    note, not drawn."""
    _check_columns(steps, ["dataset", "loss", "seed", "step", *metrics], "metric_over_steps")
    datasets = sorted(steps["dataset"].unique())
    palette = loss_palette(loss_order(steps))
    binned = _binned(steps, metrics, bins)
    constant = {(d, m): is_constant(binned.loc[binned["dataset"] == d, m]) for m in metrics for d in datasets}
    shown, left_out = _drawn_metrics(binned, metrics, datasets, constant)
    saturated = {(d, m): saturated_losses(binned[binned["dataset"] == d], m) for m in shown for d in datasets
                 if not constant[(d, m)]}
    left_out += _saturated_notes(saturated, binned)
    notes = [title, _seed_note(steps, f"line: mean of {bins} step ranges; band: ± 1 std"), *left_out]
    if not shown:
        fig = _figure(width, 0.9)
        _note(fig, notes)
        return fig
    fig = _figure(width, 1.75 * len(shown) + 0.6 + 0.14 * len(notes))
    axes = _grid(fig, len(shown), len(datasets), sharex="col")
    for i, metric in enumerate(shown):
        for j, dataset in enumerate(datasets):
            ax = axes[i, j]
            sub = binned[binned["dataset"] == dataset]
            if i == 0:
                ax.set_title(dataset)
            if constant[(dataset, metric)]:
                _constant_panel(ax, f"{label(metric, unit=False)} on {dataset}: {sub[metric].mean():.4g} for "
                                    "every loss (constant, not compared)")
                continue
            for loss, colour in palette.items():
                one = sub[sub["loss"] == loss]
                if len(one) and not one[metric].isna().all() and loss not in saturated[(dataset, metric)]:
                    _mean_band(ax, one, "step", metric, colour, loss)
            if metric in logy or _spans_decades(sub[metric]):
                ax.set_yscale("log")
            elif is_share(metric):
                ax.set_ylim(-0.03, 1.03)  # a share on its whole range: no rounding blown up to fill the panel
            ax.ticklabel_format(axis="y", useOffset=False) if ax.get_yscale() == "linear" else None
            ax.set_xlabel("training step" if i == len(shown) - 1 else "")
            ax.set_ylabel(_wrap(label(metric), 1.1) if j == 0 else "")
    _note(fig, notes, *_loss_handles(palette))
    return fig


PROBE_METRICS = ("tuple_active_ratio", "grad_effective_share", "emb_grad_norm_mean")
"""What :func:`probe_readings` draws by default: the loss terms' active share, Kish's effective share
of the per-sample gradients, and their mean norm (scale-dependent)."""


def probe_readings(probes: pd.DataFrame, metrics: Sequence[str] = PROBE_METRICS, title: str = "",
                   width: str | float = "page") -> plt.Figure:
    """GREEDINESS on the fixed probe batches (the ``probes`` table of :func:`vgcore.results.collect`):
    each loss read on the same samples at shares of its own training (0 = untrained, 1 = its stop),
    one line per loss (mean over seeds, band ± 1 std); rows = dataset x metric, columns = probe
    batch (random, P x K). A metric spanning decades is drawn on a log axis, a share on [0, 1]."""
    _check_columns(probes, ["dataset", "loss", "seed", "batch", "fraction", *metrics], "probe_readings")
    datasets = sorted(probes["dataset"].unique())
    batches = list(dict.fromkeys(probes["batch"]))
    palette = loss_palette(loss_order(probes))
    notes = [title, _seed_note(probes, "line: mean over seeds; band: ± 1 std"),
             "x: share of each run's own training (0: untrained head; 1: its stop); the same probe samples for every loss"]
    rows = [(d, m) for d in datasets for m in metrics]
    fig = _figure(width, 1.25 * len(rows) + 0.6 + 0.14 * len(notes))
    axes = _grid(fig, len(rows), len(batches), sharex=True)
    for i, (dataset, metric) in enumerate(rows):
        for j, batch in enumerate(batches):
            ax = axes[i, j]
            sub = probes[(probes["dataset"] == dataset) & (probes["batch"] == batch)]
            if i == 0:
                ax.set_title(f"{batch} probe batch")
            for loss, colour in palette.items():
                one = sub[sub["loss"] == loss]
                if len(one) and not one[metric].isna().all():
                    _mean_band(ax, one, "fraction", metric, colour, loss)
            if _spans_decades(sub[metric]):
                ax.set_yscale("log")
            elif is_share(metric):
                ax.set_ylim(-0.03, 1.03)
            ax.set_xticks([0.0, 0.5, 1.0])
            ax.set_xlabel("share of training" if i == len(rows) - 1 else "")
            ax.set_ylabel(_wrap(f"{dataset}: {label(metric)}", 1.1) if j == 0 else "")
    _note(fig, notes, *_loss_handles(palette))
    return fig


def normalised_loss(steps: pd.DataFrame, bins: int = 60) -> pd.DataFrame:
    """Each run's training loss averaged in `bins` step ranges (:func:`_binned`), then scaled to
    ``(L_t - L_min) / (L_0 - L_min)``: 1 at its first range, 0 at its lowest, whatever the loss's own
    scale and offset (InfoNCE's log N floor, a margin loss's zero). A run whose loss never fell below its
    first range is left out (nothing to normalise). Columns dataset, loss, seed, step, train_loss."""
    binned = _binned(steps, [STEP_LOSS], bins)
    out = []
    for _, run in binned.groupby(["dataset", "loss", "seed"], sort=True):
        run = run.sort_values("step")
        first, low = float(run[STEP_LOSS].iloc[0]), float(run[STEP_LOSS].min())
        if first > low:
            out.append(run.assign(**{STEP_LOSS: (run[STEP_LOSS] - low) / (first - low)}))
    columns = ["dataset", "loss", "seed", "step", STEP_LOSS]
    return pd.concat(out, ignore_index=True)[columns] if out else pd.DataFrame(columns=columns)


def training_curves(steps: pd.DataFrame, epochs: pd.DataFrame, bins: int = 60, width: str | float = "page") -> plt.Figure:
    """Every loss's training curve on one figure per dataset (columns): the normalised training loss
    (:func:`normalised_loss`; top row) above the validation Recall@1 (``progress/validation`` rows, or
    the eval split's progress rows for runs without a validation split; bottom row), both against the
    training step; mean over seeds with a ± 1 std band."""
    _check_columns(steps, ["dataset", "loss", "seed", "step", STEP_LOSS], "training_curves")
    loss = normalised_loss(steps, bins)
    progress = epochs[epochs["split"].astype(str).str.startswith(PROGRESS)
                      & ~epochs["split"].astype(str).str.endswith("train_subset")]
    datasets = sorted(set(steps["dataset"]) | set(progress["dataset"]))
    palette = loss_palette(loss_order(steps))
    fig = _figure(width, 2 * 1.75 + 0.9)
    axes = _grid(fig, 2, len(datasets), sharex="col")
    for j, dataset in enumerate(datasets):
        top, bottom = axes[0, j], axes[1, j]
        top.set_title(dataset)
        for name, colour in palette.items():
            one = loss[(loss["dataset"] == dataset) & (loss["loss"] == name)]
            if len(one):
                _mean_band(top, one, "step", STEP_LOSS, colour, name)
            one = progress[(progress["dataset"] == dataset) & (progress["loss"] == name)]
            if len(one):
                _mean_band(bottom, one, "step", "recall@1", colour, name)
        top.set_ylim(-0.03, 1.03)
        top.set_ylabel(_wrap("normalised training loss", 1.2) if j == 0 else "")
        bottom.set_ylabel(_wrap("validation Recall@1 [fraction of queries]", 1.2) if j == 0 else "")
        bottom.set_xlabel("training step")
    left = sorted(set(steps[["dataset", "loss", "seed"]].itertuples(index=False))
                  - set(loss[["dataset", "loss", "seed"]].itertuples(index=False)))
    ends = loss.sort_values("step").groupby(["dataset", "loss"])[STEP_LOSS].agg(lambda v: v.iloc[-1])
    rose = [f"{d}/{x}" for (d, x), v in ends.items() if v > 0.5]
    notes = ["training loss of every loss on one scale, (L_t - L_min) / (L_0 - L_min): each run's first value 1, "
             "its lowest 0; below it the validation Recall@1",
             *([f"ends above half its first value (a loss averaged over the tuples it mines follows them, not only "
                f"the embedding): {', '.join(rose)}"] if rose else []), _seed_note(steps, f"line: mean of {bins} step ranges (loss) or the evaluated "
                                                      "steps (Recall@1); band: ± 1 std")]
    if left:
        notes.append(f"left out, loss never below its first value: {', '.join(f'{d}/{x}/seed {s}' for d, x, s in left)}")
    _note(fig, notes, *_loss_handles(palette))
    return fig


def _scatter_panel(ax, frame: pd.DataFrame, x: str, y: str, palette, scales: pd.DataFrame,
                   hollow: frozenset = frozenset()) -> None:
    """One dataset's points; log axes where the metric spans decades in `scales` (every dataset's rows);
    the losses in `hollow` drawn with open markers."""
    agg = frame.groupby("loss")[[x, y]].agg(["mean", "std"])
    for loss, colour in palette.items():
        if loss not in agg.index:
            continue
        row = agg.loc[loss]
        ax.errorbar(row[(x, "mean")], row[(y, "mean")], xerr=np.nan_to_num(row[(x, "std")]),
                    yerr=np.nan_to_num(row[(y, "std")]), fmt=loss_marker(loss), color=colour, ms=4, elinewidth=0.8,
                    capsize=1.5, mfc="white" if loss in hollow else colour)
    for axis, metric in (("x", x), ("y", y)):
        if _spans_decades(scales[metric]):
            (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    ax.margins(0.1)


def scatter_means(summary: pd.DataFrame, x: str, y: str, title: str = "", width: str | float = "page") -> plt.Figure:
    """One point per loss: the seed means of `x` and `y` with ± 1 std bars; one panel per dataset
    (datasets have their own scales)."""
    _check_columns(summary, ["dataset", "loss", "seed", x, y], "scatter_means")
    return _scatter_grid(summary, x, [y], title, width)


def _scatter_grid(summary: pd.DataFrame, x: str, ys: Sequence[str], title: str, width, *,
                  xlabel: str | None = None, hollow: frozenset = frozenset(), notes: Sequence[str] = ()) -> plt.Figure:
    """Panels (dataset, y metric): one column per dataset, one row per metric (a single dataset at
    page width: the metrics side by side). `hollow`: (dataset, loss) pairs drawn with open markers."""
    datasets = sorted(summary["dataset"].unique())
    palette = loss_palette(loss_order(summary))
    page = figure_width(width) >= 5
    panels = [(d, m) for m in ys for d in datasets]
    if len(datasets) > 1:
        cols = len(datasets) if page or len(datasets) <= 2 else 1
    else:
        cols = len(ys) if page else 1
    rows = int(np.ceil(len(panels) / cols))
    panel_w = figure_width(width) / cols - 0.75  # less the y label and ticks
    xlabel = xlabel or label(x)
    lines = _wrap(xlabel, panel_w).count("\n") + 1  # a long x label takes rows of its own
    notes = [title, _seed_note(summary, "dot: mean; bars: ± 1 std"), *notes]
    fig = _figure(width, (1.85 + 0.135 * max(0, lines - 2)) * rows + 1.2 + 0.14 * max(0, len(notes) - 2))
    axes = _grid(fig, rows, cols)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (dataset, metric) in zip(axes.flat, panels, strict=False):
        ax.set_title(dataset)
        _scatter_panel(ax, summary[summary["dataset"] == dataset], x, metric, palette, summary,
                       frozenset(loss for d, loss in hollow if d == dataset))
        ax.set_xlabel(_wrap(xlabel, panel_w))
        ax.set_ylabel(_wrap(label(metric), 1.6))
    _note(fig, notes, *_loss_handles(palette))
    return fig


def tradeoff(summary: pd.DataFrame, epochs: pd.DataFrame, speed: str = "val_convergence_step",
             granularity: Sequence[str] = ("intra_var", "recall@1"), width: str | float = "page") -> plt.Figure:
    """The efficiency-granularity trade-off: convergence speed (x; left = faster; default: steps to
    90 % of the validation Recall@1 gain) as a share of the run's training steps (its last step in
    `epochs`: 1 is the end of training, the same on every dataset), against intra-class variance and
    Recall@1 (y); one column per dataset, one row per y metric.

    A loss with a seed whose `speed` is its run's last step is drawn with open markers: its curve was
    still rising when training stopped, so its x is the run's length, not a measured speed."""
    _check_columns(summary, ["dataset", "loss", "seed", speed, *granularity], "tradeoff")
    _check_columns(epochs, ["dataset", "loss", "seed", "step"], "tradeoff")
    last = epochs.groupby(["dataset", "loss", "seed"])["step"].max().rename("_last")
    frame = summary.join(last, on=["dataset", "loss", "seed"])
    if frame["_last"].isna().any():
        missing = frame.loc[frame["_last"].isna(), ["dataset", "loss", "seed"]].astype(str).agg("/".join, axis=1)
        raise ValueError(f"tradeoff: no epochs rows for run(s) {', '.join(missing)}: pass the epochs table of the "
                         "same runs")
    at_end = frame[speed] >= frame["_last"]
    frame[speed] = frame[speed] / frame["_last"]
    hollow = frozenset(zip(frame.loc[at_end, "dataset"], frame.loc[at_end, "loss"], strict=True))
    notes = ["open marker: in at least one seed the mark was reached only at the run's last step (still rising "
             "when training stopped: unconverged, its x is the run's length, not a speed)"] if hollow else []
    notes.append("steps are read on the log-spaced evaluation grid: a mean between two grid points mixes seeds "
                 "that crossed at different points")
    fig = _scatter_grid(frame, speed, list(granularity),
                        "efficiency (left: converges in a smaller share of training) against granularity", width,
                        xlabel=f"{label(speed, unit=False)} [share of the run's training steps]", hollow=hollow,
                        notes=notes)
    _share_limits({speed: [ax for ax in fig.axes if ax.get_visible()]}, "x")  # a share reads alike everywhere
    return fig


def _pca2(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first two principal components of `z` and the share of the variance each explains."""
    zc = z.astype(np.float64) - z.mean(0)
    _, s, vt = np.linalg.svd(zc, full_matrices=False)
    share = s**2 / max(float((s**2).sum()), 1e-300)
    return zc @ vt[:2].T, share[:2]


CLASS_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", "h")
"""One marker per class (cycled past ten): with the colour-blind palette, a class is told apart by its
marker too, so two classes whose colours a reader confuses still differ."""


def _class_styles(n: int) -> list[tuple[tuple, str]]:
    """``(colour, marker)`` of `n` classes: seaborn's colour-blind palette (ten colours; husl past ten)
    with :data:`CLASS_MARKERS`."""
    colours = sns.color_palette("colorblind" if n <= 10 else "husl", n)
    return [(colour, CLASS_MARKERS[i % len(CLASS_MARKERS)]) for i, colour in enumerate(colours)]


def _projection(ax, z, y, names: Mapping[int, str]) -> list:
    p, share = _pca2(np.asarray(z))
    classes = list(np.unique(y))
    handles = []
    for c, (colour, marker) in zip(classes, _class_styles(len(classes)), strict=True):
        on = np.asarray(y) == c
        ax.scatter(p[on, 0], p[on, 1], s=4, color=colour, marker=marker, alpha=0.75, lw=0)
        handles.append((plt.Line2D([], [], ls="", marker=marker, ms=3.5, color=colour), names.get(int(c), f"class {c}")))
    ax.set_xlabel(f"PC1 ({100 * share[0]:.0f}%)", labelpad=1)
    ax.set_ylabel(f"PC2 ({100 * share[1]:.0f}%)", labelpad=1)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")
    return handles


def _class_names(dataset: str, y, coarse, class_names) -> tuple[dict[int, str], str]:
    names = {}
    given = (class_names or {}).get(dataset)
    for c in np.unique(y):
        names[int(c)] = str(given[int(c)]) if given is not None and int(c) < len(given) else f"class {int(c)}"
    if coarse is not None:
        sup = int(np.asarray(coarse).min())
        what = f"the {len(names)} fine classes of superclass {sup}"
    else:
        what = f"{len(names)} classes"
    return names, what


def embedding_projections(embeddings: Mapping[str, Mapping[str, tuple]], class_names: Mapping | None = None,
                          title: str = "", width: str | float = "page", per_class: int = 50) -> plt.Figure:
    """2-D PCA of final embeddings, one block of panels per dataset, one panel per loss.

    `embeddings` maps dataset -> loss -> ``(z, y)`` or ``(z, y, coarse)`` as stored in
    ``embeddings.npz``. The samples drawn are :func:`vgcore.results.embedding_sample`'s: on a dataset
    with superclass labels the fine classes of one superclass (the structure a loss keeps inside a
    superclass), otherwise the first ten classes, at most `per_class` samples each. Each panel is its
    own PCA; its axes say how much of the variance each component explains. PCA (not t-SNE) keeps
    distances comparable across panels: a tight cluster is a small intra-class variance.
    `class_names` maps dataset -> the list of its class names (legend).
    """
    from vgcore.results import embedding_sample

    if not embeddings or not any(embeddings.values()):
        raise ValueError("embedding_projections needs at least one (z, y) pair")
    datasets = [d for d in embeddings if embeddings[d]]
    blocks = {d: loss_order(pd.DataFrame({"loss": list(embeddings[d])})) for d in datasets}
    # up to 4 (page) or 3 (column) panels a row, rows as full as possible; each dataset's block is its
    # rows plus a legend; rows are flatter than square (equal aspect on the data limits) where the
    # blocks of all datasets (11 losses, 3 datasets) would not fit a page, but not below 0.8 in
    most, widest = max(len(b) for b in blocks.values()), _ncols(width, 4, 3)
    cols = int(np.ceil(most / np.ceil(most / widest)))
    rows = {d: int(np.ceil(len(blocks[d]) / cols)) for d in datasets}
    panel = (figure_width(width) - 0.1) / cols
    legend_h, top = 0.65, 0.2 + (0.15 if title else 0.0)
    row_h = max(0.8, min(panel * 0.98, (PAGE_HEIGHT - top - legend_h * len(datasets)) / sum(rows.values())))
    fig = _figure(width, sum(rows[d] * row_h + legend_h for d in datasets) + top)
    subfigs = np.atleast_1d(fig.subfigures(len(datasets), 1,
                                           height_ratios=[rows[d] * row_h + legend_h for d in datasets]))
    for sub, dataset in zip(subfigs, datasets, strict=True):
        axes = _grid(sub, rows[dataset], cols)
        handles = []
        what = ""
        for k, ax in enumerate(axes.flat):
            if k >= len(blocks[dataset]):
                ax.set_visible(False)
                continue
            loss = blocks[dataset][k]
            z, y, *rest = embeddings[dataset][loss]
            coarse = rest[0] if rest else None
            keep = embedding_sample(y, coarse, per_class=per_class)
            y_keep = np.asarray(y)[keep]
            names, what = _class_names(dataset, y_keep, None if coarse is None else np.asarray(coarse)[keep],
                                       class_names)
            handles = _projection(ax, np.asarray(z)[keep], y_keep, names)
            ax.set_title(loss)
        _note(sub, [f"{dataset}: {what}, at most {per_class} test samples each"], [h for h, _ in handles],
              [n for _, n in handles])
    if title:
        fig.suptitle(title, x=0.01, ha="left")
    return fig


def sample_images(images, labels, class_names: Sequence[str], width: str | float = "page") -> plt.Figure:
    """A grid of images with their class names.

    `images` is a uint8 tensor/array ``[N, C, H, W]`` (or ``[N, H, W]``) or a list of PIL images.
    """
    labels = np.asarray(labels)
    cols = _ncols(width, 8, 4)
    rows = int(np.ceil(len(labels) / cols))
    side = figure_width(width) / cols
    fig = _figure(width, rows * (side + 0.2))
    axes = _grid(fig, rows, cols)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, lab in zip(axes.flat, images, labels, strict=False):
        img = np.asarray(img.numpy() if hasattr(img, "numpy") else img)
        if img.ndim == 3 and img.shape[0] in (1, 3):
            img = img.transpose(1, 2, 0)
        img = img.squeeze()
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        name = str(class_names[int(lab)])
        chars = max(6, int(side * 72 / (0.55 * SMALL)) - 1)
        ax.set_title(name if len(name) <= chars else name[: chars - 1] + "…", fontsize=SMALL, loc="center")
    return fig


def feature_projection(x: np.ndarray, y: np.ndarray, title: str = "", coarse: np.ndarray | None = None,
                       class_names: Sequence[str] | None = None, per_class: int = 150,
                       width: str | float = "column") -> plt.Figure:
    """2-D PCA of feature vectors (e.g. a frozen backbone's), coloured by class, with the share of the
    variance each component explains; the samples are :func:`vgcore.results.embedding_sample`'s."""
    from vgcore.results import embedding_sample

    x, y = np.asarray(x), np.asarray(y)
    keep = embedding_sample(y, coarse, per_class=per_class)
    names, what = _class_names("features", y[keep], None if coarse is None else np.asarray(coarse)[keep],
                               {"features": class_names} if class_names is not None else None)
    fig = _figure(width, figure_width(width) * 0.75 + 0.9)
    ax = fig.subplots()
    handles = _projection(ax, x[keep], y[keep], names)
    _note(fig, [title, f"{what}, at most {per_class} samples each"], [h for h, _ in handles],
          [n for _, n in handles])
    return fig


CLAIMS_CLIP = 5.0
"""The claims figure's axis ends at +-5 smallest effects; an estimate beyond is drawn at the edge with
its value written beside it."""


def _interval(ax, r, y: float, marker: str = "o") -> None:
    """One claim on one dataset: the paired difference and its 95% interval in units of the claim's
    smallest effect of interest, clipped to +-:data:`CLAIMS_CLIP`."""
    colour = VERDICT_COLOURS.get(r["verdict"], "0.3")
    delta = r["delta_units"]
    if not (np.isfinite(delta) and delta > 0):
        raise ValueError(f"claim {r.name!r} has no smallest effect of interest (delta_units={delta!r})")
    clip = lambda v: float(np.clip(v / delta, -CLAIMS_CLIP, CLAIMS_CLIP))  # noqa: E731
    if np.isfinite(r["ci_low"]):
        ax.plot([clip(r["ci_low"]), clip(r["ci_high"])], [y, y], color=colour, lw=2.2, solid_capstyle="butt")
    if not np.isfinite(r["diff"]):
        return
    x, beyond = clip(r["diff"]), abs(r["diff"] / delta) > CLAIMS_CLIP
    filled = np.isfinite(r["ci_low"])
    ax.plot([x], [y], (">" if x > 0 else "<") if beyond else marker, color=colour, ms=3.5 if not beyond else 4.5,
            mfc=colour if filled else "none")
    if beyond:
        ax.text(x - np.sign(x) * 0.35, y - 0.22, f"{r['diff'] / delta:+.3g}", ha="right" if x > 0 else "left",
                va="bottom", fontsize=SMALL, color=colour)


def claims_intervals(claims: pd.DataFrame, title: str = "", width: str | float = "page") -> plt.Figure:
    """Each claim's verdict with its interval: the closest pair's paired difference (95% CI) in units of
    the claim's smallest effect of interest (``delta_units``), so the decision table reads off the axis:
    the grey band is +-1 (negligible inside it), right of 0 favours the claim, and the axis ends at
    +-:data:`CLAIMS_CLIP` (an estimate beyond is drawn at the edge with its value beside it). Colour =
    verdict; a claim without an interval is a hollow marker; a claim not checked on a dataset says so in
    its row (page width). Page width: one panel per dataset; column
    width: one panel, the datasets one above the other in each claim's row (marker shape = dataset).
    Claims are labelled with their text when the table has it (``text``), else their key."""
    missing = [c for c in ("claim", "dataset", "verdict", "diff", "ci_low", "ci_high", "delta_units") if c not in claims]
    if missing:
        raise ValueError(f"claims_intervals needs columns {missing}; the table has {sorted(claims.columns)}")
    if claims.empty:  # e.g. no dataset passed the learned-heads gate, or one seed only
        fig = _figure(width, 0.6)
        ax = fig.subplots()
        ax.axis("off")
        ax.text(0.5, 0.5, "no claim checked: see the gate table", ha="center", va="center", fontsize=FONT)
        return fig
    order = list(dict.fromkeys(claims["claim"]))
    text = dict(zip(claims["claim"], claims["text"] if "text" in claims else claims["claim"], strict=False))
    datasets = sorted(claims["dataset"].unique())
    page = figure_width(width) >= 5
    labels = [_wrap(str(text[k]), 2.3 if page else 1.9, SMALL) for k in order]
    row = max(lab.count("\n") + 1 for lab in labels) * SMALL * 1.25 / 72 + 0.04  # rows are evenly spaced
    fig = _figure(width, row * len(order) + (1.0 if page else 1.45))
    axes = list(_grid(fig, 1, len(datasets) if page else 1, sharey=True).flat)
    markers = dict(zip(datasets, "osD^v", strict=False))
    offsets = dict(zip(datasets, np.linspace(-0.2, 0.2, len(datasets)) if len(datasets) > 1 else [0.0], strict=True))
    for k, dataset in enumerate(datasets):
        ax = axes[k] if page else axes[0]
        rows_of = claims[claims["dataset"] == dataset].set_index("claim")
        for i, key in enumerate(order):
            if key in rows_of.index:
                _interval(ax, rows_of.loc[key], i if page else i + offsets[dataset], "o" if page else markers[dataset])
            elif page:  # an empty row would read as a claim drawn off the axis
                ax.text(0.0, i, "not checked", ha="center", va="center", fontsize=SMALL, color="0.35",
                        bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.6})
        if page:
            ax.set_title(dataset)
    ticks = [-CLAIMS_CLIP, -1.0, 0.0, 1.0, CLAIMS_CLIP]
    for ax in axes:
        ax.axvspan(-1.0, 1.0, color="0.9", lw=0, zorder=0)
        ax.axvline(0.0, color="0.2", lw=0.8)
        ax.set_xlim(-CLAIMS_CLIP - 0.4, CLAIMS_CLIP + 0.4)
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        data_w = (figure_width(width) - (2.3 if page else 1.9)) / len(axes) - 0.2
        ax.set_xlabel(_wrap("paired difference / smallest effect", data_w))
        ax.set_ylim(len(order) - 0.5, -0.5)
        ax.set_yticks(range(len(order)), labels)
        ax.grid(axis="y", visible=False)
    for ax in axes[1:]:
        ax.tick_params(axis="y", labelleft=False)
    handles = [plt.Line2D([], [], color=c, lw=2.2) for c in VERDICT_COLOURS.values()]
    names_ = list(VERDICT_COLOURS)
    if not page:
        handles += [plt.Line2D([], [], ls="", marker=markers[d], color="0.3", ms=3.5) for d in datasets]
        names_ += datasets
    _note(fig, [title or "claims: the closest pair's paired difference over seeds with its 95% interval, in units "
                         "of the claim's smallest effect of interest (right of 0 favours the claim; grey band: within "
                         f"+-1, negligible; beyond +-{CLAIMS_CLIP:g}: drawn at the edge, its value beside it)",
                "not checked: the claim does not apply to the dataset, or a loss it names did not learn there "
                "(the gate table)",
                *(["dark grey: not judged, a loss it names has a run that reached its budget unconverged"]
                  if claims["verdict"].isin(UNJUDGED_CODES).any() else [])],
          handles, names_)
    return fig


SURVIVAL_MARKS = {"survives": "\u2713", "does not survive": "\u2717", "undecided": "?"}
"""The mark a paper-protocol cell of :func:`survival_grid` carries: the claim's fate under the fair protocol."""
UNJUDGED_CODES = {"not checked": "\u2013", "not judged: unconverged": "u"}
"""What a :func:`survival_grid` cell without a verdict says (white cell)."""


def survival_grid(table: pd.DataFrame, title: str = "", width: str | float = "page") -> plt.Figure:
    """Each claim's verdict under each paper-protocol profile beside its verdict under the fair one
    (:func:`vgcore.report.survival.fair_claims_tables`' ``survival`` table): a row per claim, a block
    of columns per dataset, in each block a column per protocol with the fair one last. A cell's
    colour is its verdict (white: not checked or not judged, abbreviated in the cell); a
    paper-protocol cell carries the claim's fate there (:data:`SURVIVAL_MARKS`)."""
    _check_columns(table, ("claim", "dataset", "protocol", "paper_verdict", "fair_verdict", "survival"), "survival_grid")
    claims = list(dict.fromkeys(table["claim"]))
    protocols = list(dict.fromkeys(table["protocol"]))
    datasets = sorted(table["dataset"].unique())
    columns = [*protocols, "fair"]
    page = figure_width(width) >= 5
    labels = [_wrap(str(c), 2.6 if page else 1.9, SMALL) for c in claims]
    row = max(lab.count("\n") + 1 for lab in labels) * SMALL * 1.25 / 72 + 0.05
    fig = _figure(width, row * len(claims) + 1.5)
    ax = fig.subplots()
    step = len(columns) + 0.7  # a gap between the datasets' blocks
    ticks, names = [], []
    for a, dataset in enumerate(datasets):
        rows_of = table[table["dataset"] == dataset]
        for j, column in enumerate(columns):
            x = a * step + j
            ticks.append(x)
            names.append(column.replace("_", "\n" if page else " "))
            for i, claim in enumerate(claims):
                cells = rows_of[rows_of["claim"] == claim].set_index("protocol")
                if column == "fair":
                    verdict, mark = (cells["fair_verdict"].iloc[0] if len(cells) else "not checked"), ""
                elif column in cells.index:
                    verdict, mark = cells.loc[column, "paper_verdict"], SURVIVAL_MARKS[cells.loc[column, "survival"]]
                else:
                    verdict, mark = "not checked", ""
                ax.add_patch(plt.Rectangle((x - 0.45, i - 0.42), 0.9, 0.84, facecolor=VERDICT_COLOURS.get(verdict, "white"),
                                           edgecolor="0.6", lw=0.4))
                text = mark if verdict in VERDICT_COLOURS else UNJUDGED_CODES.get(verdict, "\u2013")
                ax.text(x, i, text, ha="center", va="center", fontsize=FONT,
                        color="black" if verdict in VERDICT_COLOURS else "0.35")
        ax.text(a * step + (len(columns) - 1) / 2, -0.55, dataset, ha="center", va="bottom", fontsize=FONT,
                clip_on=False)
    ax.set_xlim(-0.5, (len(datasets) - 1) * step + len(columns) - 0.5)
    ax.set_ylim(len(claims) - 0.5, -0.5)
    ax.set_xticks(ticks, names, fontsize=SMALL, rotation=0 if page else 90)
    ax.set_yticks(range(len(claims)), labels)
    ax.grid(False)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.tick_params(length=0)
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor=c, edgecolor="0.6", lw=0.4) for c in VERDICT_COLOURS.values()]
    _note(fig, [title or ("each claim's verdict under the paper's protocol beside the fair comparison's, per dataset "
                          "(the name above its block); the mark in a paper-protocol cell is the claim's fate there: "
                          + ", ".join(f"{m} {fate}" for fate, m in SURVIVAL_MARKS.items())),
                "\u2013: not checked (the claim does not apply, or a loss it names did not learn); u: not judged, a "
                "loss it names has an unconverged run; descriptive: 95% intervals per claim, no correction across "
                "claims, datasets or protocols"],
          handles, list(VERDICT_COLOURS))
    return fig


def _share_text(share: float) -> str:
    """A share in [0, 1] in one decimal without the leading zero: "0", ".4", "1"."""
    return f"{share:.1f}".lstrip("0") if 0 < share < 1 else f"{share:.0f}"


def stability_grid(table: pd.DataFrame, title: str = "", width: str | float = "page") -> plt.Figure:
    """Structure or constants (:func:`vgcore.report.sensitivity.stability`): a row per claim, a column per
    loss constant, a block per dataset (side by side at page width, one above the other at column
    width); a cell's shade is the share of that constant's values under which the claim's fair verdict
    holds (dark: at every value, from the losses' form; light: it changes inside the range, from the
    constants), printed at page width; white with a dash: the claim does not name that loss. Without
    a judged fair verdict (an empty table) it says so."""
    columns = ("claim", "dataset", "loss", "param", "share_holds", "values")
    if table.empty and set(columns) <= set(table.columns):
        fig = _figure(width, 0.6)
        ax = fig.subplots()
        ax.axis("off")
        ax.text(0.5, 0.5, "no fair verdict to move: every claim is not checked or not judged (the fair build's gate "
                "and convergence tables)", ha="center", va="center", fontsize=SMALL, wrap=True)
        return fig
    _check_columns(table, columns, "stability_grid")
    claims = list(dict.fromkeys(table["claim"]))
    losses = list(dict.fromkeys(table["loss"]))
    datasets = sorted(table["dataset"].unique())
    page = figure_width(width) >= 5
    labels = [_wrap(str(c), 2.4 if page else 1.9, SMALL) for c in claims]
    row = max(max(lab.count("\n") + 1 for lab in labels) * SMALL * 1.25 / 72 + 0.05, 0.2)
    blocks_down = 1 if page else len(datasets)
    fig = _figure(width, row * (len(claims) + 1) * blocks_down + (2.2 if page else 1.6))
    ax = fig.subplots()
    shades = plt.get_cmap("Greens")
    across = len(losses) + 0.7 if page else 0  # x offset of each dataset's block
    down = 0 if page else len(claims) + 1.2    # y offset of each dataset's block
    xticks, xnames, yticks, ynames = [], [], [], []
    for a, dataset in enumerate(datasets):
        cells = table[table["dataset"] == dataset].set_index(["claim", "loss"])
        for j, loss in enumerate(losses):
            x = a * across + j
            if page or a == 0:
                param = table.loc[table["loss"] == loss, "param"].iloc[0]
                xticks.append(x)
                xnames.append(f"{loss} ({param})" if page else loss)
            for i, claim in enumerate(claims):
                y = a * down + i
                if j == 0 and (a == 0 or not page):
                    yticks.append(y)
                    ynames.append(labels[i])
                share = None
                if (claim, loss) in cells.index:
                    share = float(cells.loc[(claim, loss), "share_holds"])
                face = "white" if share is None else shades(0.15 + 0.75 * share)
                ax.add_patch(plt.Rectangle((x - 0.45, y - 0.42), 0.9, 0.84, facecolor=face, edgecolor="0.6", lw=0.4))
                text = "\u2013" if share is None else _share_text(share) if page else ""
                if text:
                    ax.text(x, y, text, ha="center", va="center", fontsize=SMALL,
                            color="white" if share is not None and share > 0.6 else "0.2")
        ax.text(a * across + (len(losses) - 1) / 2, a * down - 0.55, dataset, ha="center", va="bottom",
                fontsize=FONT, clip_on=False)
    ax.set_xlim(-0.5, (len(datasets) - 1) * across + len(losses) - 0.5)
    ax.set_ylim((len(datasets) - 1) * down + len(claims) - 0.5, -0.5)
    ax.set_xticks(xticks, xnames, fontsize=SMALL, rotation=90)
    ax.set_yticks(yticks, ynames)
    ax.grid(False)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.tick_params(length=0)
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor=shades(0.15 + 0.75 * v), edgecolor="0.6", lw=0.4)
               for v in (0.0, 0.5, 1.0)]
    n_values = int(table["values"].max())
    _note(fig, [title or ("structure or constants: the share of each loss constant's values (its tuning range, "
                          f"{n_values} points) under which the claim's fair verdict holds, one loss's runs moved at a "
                          "time; dark: it holds at every value (the losses' form), light: it changes inside the range "
                          "(the constants)"), "\u2013: the claim does not name that loss"],
          handles, ["holds at no value", "at half of them", "at every value"])
    return fig
