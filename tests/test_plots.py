"""vgcore.report.plots, the declared outputs and the workflow helpers, on hand-made tables in the results schema."""

from __future__ import annotations

import math
import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from vgcore import workflow
from vgcore.config import PROFILES
from vgcore.metrics import is_share
from vgcore.metrics.convergence import progress_grid
from vgcore.report import gallery, outputs, plots, space_plots

from _smoke_build import ROOT

rng = np.random.default_rng(0)  # tables below draw from their own generator: the same table every call
LOSSES = PROFILES["demo"].losses  # the paper's seven and the named variants the demo runs
DATASETS = ("fashionmnist", "synthetic")
DEMO_DATASETS = ("fashionmnist", "synthetic", "synthetic_super")  # the demo profile's three: the most a figure holds
SEEDS = (0, 1, 2)
PROGRESS_STEPS = progress_grid(1200, 2**0.5)  # 0, 1, 2, 3, 4, 6, 8, 11, 16, ... as the training loop reads them


def summary_table(datasets=DATASETS, seeds=SEEDS) -> pd.DataFrame:
    """A summary table in the results schema: metrics at realistic levels, one spanning decades, one
    saturated (active ratio 1.0 for every loss on every dataset)."""
    rng = np.random.default_rng(0)
    rows = []
    for d in datasets:
        for k, loss in enumerate(LOSSES):
            for s in seeds:
                rows.append({"profile": "demo", "dataset": d, "loss": loss, "seed": s,
                             "intra_var": 0.2 + 0.04 * k + 0.01 * rng.random(), "inter_var": 0.9 + 0.02 * rng.random(),
                             "centroid_dist_mean": 1.0 + 0.05 * k + 0.01 * rng.random(),
                             "centroid_dist_cv": 0.1 + 0.02 * k * rng.random(),
                             "recall@1": 0.80 + 0.006 * k + 0.003 * rng.random(), "map@r": 0.6 + 0.01 * rng.random(),
                             "loss_convergence_step": int(20 * 2.5**k + rng.integers(0, 9)),
                             "val_convergence_step": float(PROGRESS_STEPS[int(5 + 1.5 * k) + int(rng.integers(0, 2))]),
                             "active_ratio_mean": 1.0, "grad_active_ratio_mean": 0.6 + 0.04 * k,
                             "grad_effective_share_mean": 0.4 + 0.05 * k * rng.random(),
                             "grad_norm_mean": 1e-3 * 4.0**k * (1 + 0.1 * rng.random())})
    return pd.DataFrame(rows)


def epochs_table(n_epochs=5) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [{"dataset": d, "loss": loss, "seed": s, "epoch": e, "split": split, "train_loss": rng.random(),
             "intra_var": 0.6 - 0.05 * e + 0.01 * k + 0.005 * rng.random(), "inter_var": rng.random(),
             "recall@1": 0.3 + 0.1 * e + 0.01 * k + 0.005 * rng.random()}
            for d in DATASETS for k, loss in enumerate(LOSSES) for s in SEEDS for e in range(n_epochs + 1)
            for split in ("test", "train_subset")]
    return pd.DataFrame(rows)


def progress_table(datasets=DATASETS) -> pd.DataFrame:
    """epochs.csv rows of the progress splits at the log-spaced progress steps: Recall@1 rising like
    1 - exp(-step / tau), tau growing with the loss; one run (ccl_ema, seed 2 on the first dataset)
    does not rise (it has no progress to normalise), and the training-subset rows are ignored."""
    rng = np.random.default_rng(0)
    rows = []
    for d in datasets:
        for k, loss in enumerate(LOSSES):
            for s in SEEDS:
                flat = d == datasets[0] and loss == "ccl_ema" and s == 2
                for step in PROGRESS_STEPS:
                    rise = 0.0 if flat else 0.5 * (1 - np.exp(-step / (15 * 1.6**k)))
                    for split in ("progress/validation", "progress/train_subset"):
                        rows.append({"dataset": d, "loss": loss, "seed": s, "epoch": np.nan, "step": step,
                                     "split": split, "recall@1": 0.3 + rise + 0.01 * rng.random()})
    return pd.DataFrame(rows)


def steps_table(n=120) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [{"dataset": d, "loss": loss, "seed": s, "step": i, "epoch": i // 24 + 1, "train_loss": 1 / (i + 1),
             "active_ratio": 1.0, "grad_active_ratio": 1.0 if d == "synthetic" else 0.5 + 0.04 * k + 0.01 * rng.random(),
             "tuple_active_ratio": 1.0, "grad_effective_share": 0.3 + 0.05 * k + 0.3 * np.exp(-i / 30),
             "grad_norm": 1e-3 * 4.0**k * (1 + np.exp(-i / 20)), "emb_grad_norm_mean": 0.1 + 0.01 * k}
            for d in DATASETS for k, loss in enumerate(LOSSES) for s in SEEDS for i in range(n)]
    return pd.DataFrame(rows)


def probes_table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [{"dataset": d, "loss": loss, "seed": s, "batch": b, "fraction": f, "epoch": int(20 * f),
             "tuple_active_ratio": 1.0 - 0.6 * f * (k + 1) / len(LOSSES), "grad_effective_share": 0.3 + 0.05 * k,
             "emb_grad_norm_mean": 1e-3 * 4.0**k * (1 + 0.1 * rng.random())}
            for d in DATASETS for k, loss in enumerate(LOSSES) for s in SEEDS for b in ("random", "pk")
            for f in (0.0, 0.25, 0.5, 0.75, 1.0)]
    return pd.DataFrame(rows)


def stability_table() -> pd.DataFrame:
    from vgcore.report.claims import CLAIMS
    from vgcore.tuning import SEARCH_SPACE

    rows = [{"claim": claim.key, "dataset": d, "loss": loss, "param": SEARCH_SPACE[loss].param,
             "share_holds": ((i + k) % 6) / 5, "values": 5}
            for d in ("fashionmnist", "synthetic") for i, claim in enumerate(CLAIMS)
            for k, loss in enumerate((*LOSSES[:7], "npair_groups", "multisimilarity")) if (i + k) % 4]
    return pd.DataFrame(rows)


def claims_table() -> pd.DataFrame:
    from vgcore.report.claims import CLAIMS

    rows = []
    for d in DATASETS:
        for i, claim in enumerate(CLAIMS):
            verdict = ("supported", "contradicted", "inconclusive")[i % 3]
            diff = (0.05, -0.2, 0.003)[i % 3] * (1 + i)
            rows.append({"claim": claim.key, "text": claim.text, "dataset": d, "verdict": verdict, "diff": diff,
                         "ci_low": diff - 0.02 if i % 3 != 2 else np.nan,
                         "ci_high": diff + 0.02 if i % 3 != 2 else np.nan, "ref_mean": 0.5,
                         "delta_units": 0.01 * (1 + i % 4)})
    return pd.DataFrame(rows)


def survival_table() -> pd.DataFrame:
    """A fair_claims_tables survival table: every claim on two datasets against demo and paper_schedule,
    every verdict and fate present, some checks missing on a side."""
    from vgcore.report.claims import CLAIMS, NOT_CHECKED, ORDER
    from vgcore.report.survival import NOT_JUDGED_UNCONVERGED, survives

    verdicts = [*ORDER, NOT_CHECKED, NOT_JUDGED_UNCONVERGED]
    rows = []
    for d in ("fashionmnist", "synthetic"):
        for i, claim in enumerate(CLAIMS):
            fair = verdicts[(i + 3) % len(verdicts)]
            for k, protocol in enumerate(("demo", "paper_schedule")):
                paper = verdicts[(i + k) % len(verdicts)]
                rows.append({"claim": claim.text, "dataset": d, "protocol": protocol, "paper_verdict": paper,
                             "fair_verdict": fair, "changed": paper != fair, "survival": survives(paper, fair)})
    return pd.DataFrame(rows)


def embeddings(datasets=DATASETS) -> dict:
    """dataset -> loss -> (z, y[, coarse]) as embeddings.npz stores them: 10 classes, and superclass sets."""
    rng = np.random.default_rng(0)
    out = {d: {} for d in datasets}
    y10 = np.repeat(np.arange(10), 80)
    fine = np.repeat(np.arange(20), 30)
    coarse = fine // 5
    for loss in LOSSES:
        out["fashionmnist"][loss] = (rng.normal(size=(len(y10), 16)) + 3 * np.eye(16)[y10], y10)
        for d in datasets[1:]:
            out[d][loss] = (rng.normal(size=(len(fine), 16)) + 2 * np.eye(16)[fine % 16], fine, coarse)
    return out


def similarities(datasets=DATASETS) -> dict:
    """dataset -> loss -> (positive, negative) cosine similarities: positives higher, later losses tighter."""
    rng = np.random.default_rng(0)
    return {d: {loss: (np.clip(rng.normal(0.8 - 0.02 * k, 0.1, 400), -1, 1), np.clip(rng.normal(0.0, 0.3, 3000), -1, 1))
                for k, loss in enumerate(LOSSES)} for d in datasets}


def per_class_table() -> pd.DataFrame:
    """Per-class Recall@1 rows: fashionmnist's 10 named classes, synthetic's 20 fine classes."""
    rng = np.random.default_rng(0)
    return pd.DataFrame([{"dataset": d, "loss": loss, "class": c, "recall": rng.uniform(0.4, 1.0)}
                         for d, n in (("fashionmnist", 10), ("synthetic", 20)) for loss in LOSSES for c in range(n)])


FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

FIGURES = {
    "run_curves": lambda w: plots.run_curves(*_one_run(), title="triplet on fashionmnist (seed 0, profile demo)", width=w),
    "metric_dots": lambda w: plots.metric_dots(summary_table(), ["intra_var", "inter_var", "centroid_dist_cv"], width=w),
    "metric_dots_greediness": lambda w: plots.metric_dots(
        summary_table(), ["active_ratio_mean", "grad_active_ratio_mean", "grad_effective_share_mean", "grad_norm_mean"],
        width=w),
    "metric_dots_three_datasets": lambda w: plots.metric_dots(summary_table(DEMO_DATASETS),
                                                              ["intra_var", "inter_var", "centroid_dist_cv"], width=w),
    "metric_over_epochs": lambda w: plots.metric_over_epochs(epochs_table(), "recall@1", width=w),
    "validation_progress": lambda w: plots.validation_progress(progress_table(DEMO_DATASETS), width=w),
    "metric_over_steps": lambda w: plots.metric_over_steps(
        steps_table(), ["active_ratio", "grad_active_ratio", "grad_effective_share"], width=w),
    "metric_over_steps_log": lambda w: plots.metric_over_steps(steps_table(), ["grad_norm", "emb_grad_norm_mean"],
                                                               width=w),
    "scatter_means": lambda w: plots.scatter_means(summary_table(), "centroid_dist_mean", "centroid_dist_cv", width=w),
    "tradeoff": lambda w: plots.tradeoff(summary_table(), progress_table(), width=w),
    "tradeoff_one_dataset": lambda w: plots.tradeoff(summary_table(datasets=("synthetic",)),
                                                     progress_table(datasets=("synthetic",)), width=w),
    "training_curves": lambda w: plots.training_curves(steps_table(), progress_table(), width=w),
    "similarity_distributions": lambda w: space_plots.similarity_distributions(similarities(), "lowest seed", width=w),
    "similarity_distributions_three": lambda w: space_plots.similarity_distributions(
        similarities(DEMO_DATASETS), width=w),
    "per_class_recall_map": lambda w: space_plots.per_class_recall_map(per_class_table(), {"fashionmnist": FASHION},
                                                                       "mean over 3 seeds", width=w),
    "embedding_projections": lambda w: plots.embedding_projections(embeddings(), {"fashionmnist": FASHION}, width=w),
    "sample_images": lambda w: plots.sample_images(rng.integers(0, 255, (16, 1, 28, 28), dtype=np.uint8),
                                                   np.arange(16) % 10, FASHION, width=w),
    "feature_projection": lambda w: plots.feature_projection(*embeddings()["fashionmnist"]["triplet"],
                                                             title="fashionmnist · efficientnet_lite0 features (PCA)",
                                                             class_names=FASHION, width=w),
    "claims_intervals": lambda w: plots.claims_intervals(claims_table(), width=w),
    "survival_grid": lambda w: plots.survival_grid(survival_table(), width=w),
    "probe_readings": lambda w: plots.probe_readings(probes_table(), width=w),
    "stability_grid": lambda w: plots.stability_grid(stability_table(), width=w),
    "retrieval_gallery": lambda w: gallery.retrieval_gallery(*_gallery("fashionmnist"), width=w,
                                                             title="fashionmnist · seed 0: random queries"),
    "retrieval_gallery_stand_in": lambda w: gallery.retrieval_gallery(*_gallery("synthetic"), width=w,
                                                                      title="synthetic · seed 0: disagreements"),
}


def _gallery(dataset: str) -> tuple:
    """(queries, ranked, y, images, coarse) of the demo's seven losses (all eleven on synthetic): 10
    random queries with 28x28 images, or 4 disagreement queries on stand-in tiles with superclasses."""
    from vgcore.metrics.neighbours import ranked_neighbours

    data = embeddings()[dataset]
    losses = LOSSES[:7] if dataset == "fashionmnist" else LOSSES
    y = data[losses[0]][1]
    ranked = {loss: ranked_neighbours(data[loss][0], y, 4) for loss in losses}
    if dataset == "fashionmnist":
        images = np.random.default_rng(0).integers(0, 255, (len(y), 1, 28, 28), dtype=np.uint8)
        return gallery.gallery_queries(y), ranked, y, images, None
    queries = gallery.disagreement_queries({loss: r.relevant for loss, r in ranked.items()}, 4)
    return queries, ranked, y, None, data[losses[0]][2]


def _one_run():
    steps, epochs = steps_table(), epochs_table()
    one = lambda t: t[(t.loss == "triplet") & (t.seed == 0) & (t.dataset == "fashionmnist")]  # noqa: E731
    return one(steps).drop(columns=["dataset", "loss", "seed"]), one(epochs).drop(columns=["dataset", "loss", "seed"])


# --- text extents, measured independently of the plotting code ----------------------------------------------


def _ticks_drawn(axis):
    try:
        return axis._update_ticks()  # the ticks matplotlib draws (inside the view)
    except AttributeError:  # pragma: no cover - a future matplotlib
        return axis.get_major_ticks()


def drawn_texts(fig) -> list[tuple[object, object, object]]:
    """(owner, Text, window extent) of every non-empty text the figure draws; owner groups the texts
    of one legend (its frame is checked too)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    found = []

    def figures(f):
        yield f
        for sub in f.subfigs:
            yield from figures(sub)

    for f in figures(fig):
        found += [("figure", t) for t in (*f.texts, f._suptitle, f._supxlabel, f._supylabel) if t is not None]
        for legend in f.legends:
            found += [(legend, t) for t in (*legend.get_texts(), legend.get_title())]
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        found += [("axes", t) for t in (ax.title, ax._left_title, ax._right_title, *ax.texts)]
        if ax.axison:
            for axis in (ax.xaxis, ax.yaxis):
                found += [("axes", axis.label), ("axes", axis.get_offset_text())]
                for tick in _ticks_drawn(axis):
                    found += [("tick", t) for t in (tick.label1, tick.label2) if t.get_visible()]
        if ax.get_legend() is not None:
            legend = ax.get_legend()
            found += [(legend, t) for t in (*legend.get_texts(), legend.get_title())]
    unique = {id(t): (owner, t) for owner, t in found}  # a suptitle is also in the figure's texts
    return [(owner, t, t.get_window_extent(renderer)) for owner, t in unique.values()
            if t.get_visible() and t.get_text().strip()]


def layout_problems(fig) -> list[str]:
    """Texts outside the figure, overlapping another text or a legend they are not part of, or at a
    size other than 7-8 pt (6 pt: the footer only)."""
    import matplotlib.transforms as mtransforms

    items = drawn_texts(fig)
    renderer = fig.canvas.get_renderer()
    page = mtransforms.Bbox.from_bounds(0, 0, *fig.canvas.get_width_height())
    out = []
    for _, t, bb in items:
        size = t.get_fontsize()
        if not (plots.SMALL <= size <= plots.FONT) and not (size == plots.FOOTER and t.get_text().startswith("vgcore ·")):
            out.append(f"{t.get_text()[:40]!r} is {size} pt")
        if bb.x0 < page.x0 - 1 or bb.y0 < page.y0 - 1 or bb.x1 > page.x1 + 1 or bb.y1 > page.y1 + 1:
            out.append(f"{t.get_text()[:40]!r} leaves the figure: {bb.bounds} outside {page.bounds}")
    for i, (_, a, ba) in enumerate(items):
        for _, b, bb in items[i + 1:]:
            overlap = mtransforms.Bbox.intersection(ba.padded(-0.5), bb.padded(-0.5))
            if overlap is not None and overlap.width > 0 and overlap.height > 0:
                out.append(f"{a.get_text()[:40]!r} overlaps {b.get_text()[:40]!r}")
    legends = {id(o): o for o, _, _ in items if o not in ("figure", "axes", "tick")}
    for legend in legends.values():
        frame = legend.get_window_extent(renderer).padded(-0.5)
        for owner, t, bb in items:
            if owner is legend:
                continue
            overlap = mtransforms.Bbox.intersection(frame, bb)
            if overlap is not None and overlap.width > 0 and overlap.height > 0:
                out.append(f"{t.get_text()[:40]!r} overlaps a legend")
    return out


@pytest.fixture(autouse=True)
def _style():
    plots.use_style()
    yield
    plt.close("all")


@pytest.mark.parametrize("width", ["column", "page"])
@pytest.mark.parametrize("name", list(FIGURES))
def test_every_figure_prints_at_its_width_with_8pt_text_and_no_overlaps(name, width, tmp_path):
    fig = FIGURES[name](width)
    assert fig.get_figwidth() == plots.WIDTHS[width]
    plots.stamp(fig, "vgcore · notebooks/03_variance.ipynb · profile demo")
    problems = layout_problems(fig)
    fig.savefig(tmp_path / f"{name}_{width}.png")  # for a look when it fails
    assert not problems, f"{name} at {width} width ({tmp_path}):\n" + "\n".join(problems[:20])
    assert fig.get_figheight() < 9.5, "taller than a page"


def test_the_demo_embedding_projections_fit_a_page():
    """Notebook 03 draws the demo's three datasets x 11 losses at page width (at column width, 33
    panels do not fit a page: 2 datasets do, the figure test above)."""
    fig = plots.embedding_projections(embeddings(DEMO_DATASETS), {"fashionmnist": FASHION}, width="page")
    assert not layout_problems(fig) and fig.get_figheight() < 9.5


def test_every_plot_function_is_rendered_by_the_figure_test():
    import inspect

    public = {n for n, f in inspect.getmembers(plots, inspect.isfunction)
              if f.__module__ == plots.__name__ and not n.startswith("_")
              and "width" in inspect.signature(f).parameters and n != "figure_width"}
    covered = {n for n in public if any(n == k or k.startswith(n + "_") for k in FIGURES)}
    assert public == covered, f"not rendered by the figure test: {sorted(public - covered)}"


def test_the_layout_check_catches_overlaps_small_text_and_clipping():
    fig = plt.figure(figsize=(3.4, 2), layout="constrained")
    ax = fig.subplots()
    ax.set_xlabel("a label")
    ax.text(0.5, -0.12, "on top of the label", transform=ax.transAxes, fontsize=8)
    ax.set_title("tiny", fontsize=5)
    fig.text(0.98, 0.5, "far outside the figure", fontsize=8)
    problems = "\n".join(layout_problems(fig))
    assert "overlaps" in problems and "is 5" in problems and "leaves the figure" in problems


def test_every_loss_is_drawn_in_its_base_losss_colour_with_its_own_marker_and_line():
    """Base losses: distinct colour-blind-safe colours; a variant takes its loss's colour (not a pale
    shade two readers in three cannot tell apart) and its own marker and line style."""
    import seaborn as sns

    from vgcore.registry import VARIANTS, names

    full = plots.loss_palette()
    base = [x for x in names("loss") if x not in VARIANTS]
    assert list(full) == list(names("loss"))
    assert [full[x] for x in base] == list(sns.color_palette("colorblind", len(base)))
    assert plots.loss_palette(["scl", "triplet"]) == {"scl": full["scl"], "triplet": full["triplet"]}
    styles = {x: (full[x], plots.loss_marker(x), plots.loss_linestyle(x)) for x in names("loss")}
    assert len(set(styles.values())) == len(styles), "two losses would be drawn alike"
    for variant, of in VARIANTS.items():
        assert full[variant] == full[of]
        assert plots.loss_marker(variant) != plots.loss_marker(of)
        assert plots.loss_linestyle(variant) != plots.loss_linestyle(of)
    handles, labels = plots._loss_handles(plots.loss_palette())
    assert [(h.get_marker(), h.get_linestyle()) for h in handles] == \
        [(plots.loss_marker(x), plots.loss_linestyle(x)) for x in labels]


def test_labels_carry_units_and_name_the_spread():
    from vgcore.metrics import LABELS

    assert all(re.search(r"\S \[[^\]]+\]$", v) for v in LABELS.values()), \
        [v for v in LABELS.values() if not v.endswith("]")]
    fig = plots.metric_dots(summary_table(), ["intra_var", "recall@1"])
    texts = " ".join(t.get_text() for _, t, _ in drawn_texts(fig))
    assert "± 1 std over 3 seeds" in texts and "[fraction of queries]" in texts and "[dist.²]" in texts


def test_dots_show_differences_a_bar_from_zero_would_hide_and_use_log_scales_for_decades():
    fig = plots.metric_dots(summary_table(), ["recall@1", "grad_norm_mean"], width="page")
    recall, grad = fig.axes[0], fig.axes[1]
    lo, hi = recall.get_xlim()
    assert lo > 0.7 and hi < 0.9, "Recall@1 around 0.8 must not start at 0"
    means = [ln.get_xdata()[0] for ln in recall.lines if len(ln.get_xdata()) == 1]
    assert (hi - lo) < 3 * (max(means) - min(means)), "the spread of the means fills the axis"
    assert grad.get_xscale() == "log" and recall.get_xscale() == "linear"


def test_a_metric_constant_across_losses_gets_a_note_not_a_panel():
    summary = summary_table()
    fig = plots.metric_dots(summary, ["active_ratio_mean", "intra_var"])
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
    assert len(panels) == len(DATASETS), "one panel per dataset for intra_var only"
    assert "active ratio (loss terms): constant across losses on every dataset" in \
        fig._suptitle.get_text().replace("\n", " ")
    # constant on one dataset only: that panel becomes a one-line note
    steps = steps_table()
    fig = plots.metric_over_steps(steps, ["grad_active_ratio"])
    notes = [t.get_text().replace("\n", " ") for ax in fig.axes for t in ax.texts]
    assert any("on synthetic: 1 for every loss (constant, not compared)" in n for n in notes), notes
    assert len([ax for ax in fig.axes if ax.axison]) == 1
    steps.loc[steps.index[-1], "active_ratio"] = 1.0 - 3e-5  # a rounding-level dip is still constant
    fig = plots.metric_over_steps(steps, ["active_ratio", "grad_effective_share"])
    assert len([ax for ax in fig.axes if ax.axison]) == len(DATASETS)
    header = fig.legends[0].get_title().get_text().replace("\n", " ")  # the note heads the legend
    assert "active ratio (loss terms): constant across losses" in header


def test_losses_at_one_throughout_a_share_panel_are_named_not_drawn():
    """Issue 27: eight of nine lines sat on the top edge of the active-ratio panels."""
    steps = steps_table()
    dips, also = LOSSES[1], LOSSES[3]
    fashion = steps["dataset"] == "fashionmnist"
    steps.loc[fashion & (steps["loss"] == dips), "active_ratio"] = 1 - steps["step"] / 200  # 1.0 -> 0.4
    steps.loc[fashion & (steps["loss"] == also), "active_ratio"] = 1 - 2e-3  # just below the rounding band
    steps.loc[fashion & (steps["loss"] == LOSSES[0]), "active_ratio"] = 1 - 5e-4  # within it: saturated
    fig = plots.metric_over_steps(steps, ["active_ratio", "grad_norm"])
    panel = next(ax for ax in fig.axes if ax.axison and ax.get_title(loc="left") == "fashionmnist")
    assert sorted(line.get_label() for line in panel.lines) == sorted([dips, also])
    header = fig.legends[0].get_title().get_text().replace("\n", " ")
    order = ", ".join(x for x in LOSSES if x in (dips, also))
    assert f"At 1.0 throughout, so not drawn: active ratio (loss terms) on fashionmnist: all but {order}." in header
    assert panel.get_ylim() == (-0.03, 1.03), "a share spans its whole range"
    assert "active ratio (loss terms) on synthetic: 1 for every loss (constant" in " ".join(
        t.get_text().replace("\n", " ") for ax in fig.axes for t in ax.texts), "constant: a note, as before"
    grad = [ax for ax in fig.axes if ax.axison and ax.get_title(loc="left") == ""][0]
    assert len(grad.lines) == len(LOSSES), "a gradient norm is no share: every loss drawn"
    assert is_share("grad_effective_share") and is_share("recall@1")
    assert not is_share("adam_step_norm_mean"), "a step in units of the learning rate can exceed 1"
    steps["adam_step_norm_mean"] = 1.0 + steps["step"] / 100  # above 1 throughout: no share, all drawn
    fig = plots.metric_over_steps(steps, ["adam_step_norm_mean"])
    assert all(len(ax.lines) == len(LOSSES) for ax in fig.axes if ax.axison)
    assert plots.saturated_losses(steps[fashion].rename(columns={"grad_norm": "x"}), "active_ratio") == [
        x for x in LOSSES if x not in (dips, also)]


def test_tradeoff_reads_speed_as_a_share_of_the_run_and_opens_the_markers_of_unconverged_losses():
    summary, progress = summary_table(), progress_table()
    last = progress["step"].max()
    late = (summary["dataset"] == "synthetic") & (summary["loss"] == "triplet") & (summary["seed"] == 1)
    summary.loc[late, "val_convergence_step"] = float(last)  # reached 90% only at the run's end
    fig = plots.tradeoff(summary, progress, width="page")
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title(loc="left") for ax in panels] == ["fashionmnist", "synthetic"] * 2
    assert all("[share of the run's training steps]" in ax.get_xlabel().replace("\n", " ") for ax in panels)
    assert len({ax.get_xlim() for ax in panels}) == 1, "a share reads alike on every dataset"
    for ax in panels:
        palette = plots.loss_palette(LOSSES)
        drawn = {(round(float(np.asarray(line.get_xdata(), dtype=float)[0]), 9), line.get_marker(), line.get_color()): line
                 for line in ax.lines if len(line.get_xdata()) == 1}
        for loss in LOSSES:
            rows = summary[(summary["dataset"] == ax.get_title(loc="left")) & (summary["loss"] == loss)]
            x = round(float((rows["val_convergence_step"] / last).mean()), 9)
            line = drawn[(x, plots.loss_marker(loss), palette[loss])]
            hollow = bool((rows["val_convergence_step"] >= last).any())  # a seed reached the mark at the end only
            if ax.get_title(loc="left") == "synthetic" and loss == "triplet":
                assert hollow
            assert (line.get_markerfacecolor() == "white") == hollow, (ax.get_title(loc="left"), loss)
    header = fig.legends[0].get_title().get_text().replace("\n", " ")
    assert "open marker" in header and "unconverged" in header
    with pytest.raises(ValueError, match="no epochs rows"):
        plots.tradeoff(summary, progress[progress["dataset"] == "fashionmnist"])


def test_training_curves_normalise_each_runs_loss_from_its_first_value_to_its_lowest():
    steps = steps_table()
    steps.loc[steps["dataset"] == "synthetic", "train_loss"] *= 1000  # another scale: the same curve once normalised
    frame = plots.normalised_loss(steps, bins=12)
    for _, run in frame.groupby(["dataset", "loss", "seed"]):
        values = run.sort_values("step")["train_loss"].to_numpy()
        assert values[0] == 1.0 and values.min() == 0.0
    a = frame[(frame["dataset"] == "fashionmnist") & (frame["loss"] == "triplet") & (frame["seed"] == 0)]
    b = frame[(frame["dataset"] == "synthetic") & (frame["loss"] == "triplet") & (frame["seed"] == 0)]
    np.testing.assert_allclose(a["train_loss"].to_numpy(), b["train_loss"].to_numpy(), rtol=1e-9)
    flat = steps.copy()
    flat.loc[(flat["loss"] == "scl") & (flat["seed"] == 2), "train_loss"] = 0.5  # never below its first value
    assert not ((plots.normalised_loss(flat)["loss"] == "scl") & (plots.normalised_loss(flat)["seed"] == 2)).any()
    fig = plots.training_curves(flat, progress_table(), width="page")
    top = [ax for ax in fig.axes if ax.get_visible()][:2]
    assert [ax.get_title(loc="left") for ax in top] == ["fashionmnist", "synthetic"]
    assert all(len(ax.lines) == len(LOSSES) for ax in fig.axes if ax.get_visible())
    assert "scl/seed 2" in fig.legends[0].get_title().get_text().replace("\n", " ")


def test_similarity_distributions_draw_positives_above_and_negatives_below_each_loss_with_their_medians():
    sims = similarities()
    fig = space_plots.similarity_distributions(sims, width="page")
    ax = next(a for a in fig.axes if a.get_visible() and a.get_title(loc="left") == "fashionmnist")
    assert [t.get_text() for t in ax.get_yticklabels()] == list(LOSSES)
    medians = [line for line in ax.lines if len(line.get_xdata()) == 2 and line.get_xdata()[0] == line.get_xdata()[1]]
    for i, loss in enumerate(LOSSES):
        pos, neg = sims["fashionmnist"][loss]
        up = next(m for m in medians if min(m.get_ydata()) == pytest.approx(i - 0.45))  # above: smaller y (inverted)
        down = next(m for m in medians if max(m.get_ydata()) == pytest.approx(i + 0.45))
        assert up.get_xdata()[0] == np.median(pos) and down.get_xdata()[0] == np.median(neg)
    assert ax.yaxis_inverted()


def test_per_class_recall_map_holds_each_class_of_each_loss_and_names_the_classes():
    frame = per_class_table()
    fig = space_plots.per_class_recall_map(frame, {"fashionmnist": FASHION}, width="page")
    ax = next(a for a in fig.axes if a.get_title(loc="left") == "fashionmnist")
    grid = ax.images[0].get_array()
    want = frame[frame["dataset"] == "fashionmnist"].pivot(index="loss", columns="class", values="recall")
    np.testing.assert_array_equal(np.asarray(grid), want.reindex(list(LOSSES)).to_numpy())
    assert [t.get_text().replace("\n", " ").replace("T-shirt/ top", "T-shirt/top") for t in ax.get_xticklabels()] == FASHION
    assert {t.get_text() for t in ax.texts} >= {f"{want.loc['triplet', 0]:.2f}"}
    with pytest.raises(ValueError, match="missing"):
        space_plots.per_class_recall_map(frame.drop(columns="recall"))


def test_pca_panels_state_explained_variance_and_colour_the_fine_classes_of_one_superclass():
    emb = embeddings()
    fig = plots.embedding_projections(emb, {"fashionmnist": FASHION})
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 2 * len(LOSSES)
    for ax in panels:
        assert re.fullmatch(r"PC1 \(\d+%\)", ax.get_xlabel()) and re.fullmatch(r"PC2 \(\d+%\)", ax.get_ylabel())
    synthetic = [ax for ax in panels if ax in fig.subfigs[1].axes]
    assert len(synthetic[0].collections) == 5, "superclass 0 holds fine classes 0-4: five colours"
    styles = [(tuple(np.round(c.get_facecolor()[0][:3], 6)), c.get_paths()[0].vertices.shape)
              for c in panels[0].collections]
    assert len(set(styles)) == 10, "each class its own colour and marker"
    colourblind = {tuple(np.round(c, 6)) for c in plt.matplotlib.colors.to_rgba_array(
        __import__("seaborn").color_palette("colorblind", 10))[:, :3]}
    assert {colour for colour, _ in styles} <= colourblind, "the colour-blind palette, not tab10"
    legend = fig.subfigs[0].legends[0]
    assert [t.get_text() for t in legend.get_texts()] == FASHION
    assert "fine classes of superclass 0" in fig.subfigs[1].legends[0].get_title().get_text()
    # the explained variance is the share of the first component, computed by hand
    z, y = emb["fashionmnist"]["contrastive"]
    from vgcore.results import embedding_sample

    zc = z[embedding_sample(y)] - z[embedding_sample(y)].mean(0)
    ev = np.linalg.eigvalsh(zc.T @ zc)[::-1]
    first = next(ax for ax in panels if ax.get_title(loc="left") == "contrastive")
    assert first.get_xlabel() == f"PC1 ({100 * ev[0] / ev.sum():.0f}%)"


def test_run_curves_draws_the_six_panels_of_one_run():
    steps, epochs = _one_run()
    fig = plots.run_curves(steps, epochs, title="triplet")
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 6
    with pytest.raises(ValueError, match="needs columns"):
        plots.run_curves(steps.drop(columns="active_ratio"), epochs)


def test_figures_reject_bad_tables_and_widths():
    with pytest.raises(ValueError, match="no rows of split"):
        plots.metric_over_epochs(epochs_table(), "intra_var", split="val")
    with pytest.raises(ValueError, match="empty"):
        plots.metric_dots(summary_table().iloc[:0], ["intra_var"])
    with pytest.raises(ValueError, match="unknown width 'poster'; choose one of: column, page"):
        plots.metric_dots(summary_table(), ["intra_var"], width="poster")


def test_claims_intervals_draw_each_verdict_in_units_of_its_smallest_effect_and_survive_an_empty_table():
    """Issue 27: a symmetric-log axis in "difference / rest mean" units was hard to read, and a claim
    far outside the range stretched every panel."""
    claims = pd.DataFrame({"claim": ["a", "a", "b", "c"], "dataset": ["x", "y", "x", "x"],
                           "verdict": ["supported", "contradicted", "inconclusive", "contradicted"],
                           "diff": [0.2, -0.3, 0.01, -2.0], "ci_low": [0.1, -0.5, np.nan, -2.2],
                           "ci_high": [0.3, -0.1, np.nan, -1.8], "delta_units": [0.1, 0.05, 0.01, 0.1]})
    fig = plots.claims_intervals(claims)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title(loc="left") for ax in panels] == ["x", "y"]

    def row(ax, y):
        return [ln for ln in ax.lines if len(ln.get_ydata()) and set(ln.get_ydata()) == {y}]  # not the axvline at 0

    interval, point = row(panels[0], 0)
    assert list(interval.get_xdata()) == pytest.approx([1.0, 3.0]) and point.get_xdata()[0] == pytest.approx(2.0)
    clipped, _ = row(panels[1], 0)
    assert list(clipped.get_xdata()) == pytest.approx([-plots.CLAIMS_CLIP, -2.0]), "-10 smallest effects: at the edge"
    (hollow,) = row(panels[0], 1)
    assert hollow.get_xdata()[0] == pytest.approx(1.0) and hollow.get_markerfacecolor() == "none"
    _, beyond = row(panels[0], 2)
    assert beyond.get_marker() == "<" and beyond.get_xdata()[0] == -plots.CLAIMS_CLIP
    assert [t.get_text() for t in panels[0].texts] == ["-20"], "the value beyond the edge is written beside it"
    unchecked = [t.get_position()[1] for t in panels[1].texts if t.get_text() == "not checked"]
    assert unchecked == [1, 2], "claims b and c were not checked on y: their rows say so instead of staying empty"
    assert "not checked" not in [t.get_text() for t in panels[0].texts]
    assert panels[0].get_xlim()[1] < 6 and [t.get_text() for t in panels[0].get_xticklabels()] == ["-5", "-1", "0", "1", "5"]
    band = [p for p in panels[0].patches if p.get_facecolor()[:3] == pytest.approx((0.9, 0.9, 0.9))]
    assert band and band[0].get_x() == pytest.approx(-1.0) and band[0].get_width() == pytest.approx(2.0)
    with pytest.raises(ValueError, match=r"needs columns \['delta_units'\]"):
        plots.claims_intervals(claims.drop(columns="delta_units"))
    with pytest.raises(ValueError, match="claim 'b' has no smallest effect of interest"):
        plots.claims_intervals(claims.assign(delta_units=[0.1, 0.05, np.nan, 0.1]))
    empty = plots.claims_intervals(claims.iloc[:0])
    assert "no claim checked" in empty.axes[0].texts[0].get_text()
    full = plots.claims_intervals(claims_table())
    labels = [t.get_text().replace("\n", " ") for t in full.axes[0].get_yticklabels()]
    assert labels[0].startswith("Triplet/SCL keep more intra-class variance"), "claims are labelled in words"


def test_save_figure_writes_png_and_pdf_at_the_printed_size_naming_the_notebook_and_is_byte_stable(tmp_path):
    from PIL import Image

    paths = []
    for name in ("a", "b"):
        fig = plots.metric_dots(summary_table(seeds=(0,)).assign(intra_var=1.0), ["intra_var", "recall@1"],
                                width="column")
        paths.append(plots.save_figure(fig, tmp_path / name, "03_variance.ipynb", "demo"))
        assert any("notebooks/03_variance.ipynb · profile demo" in t.get_text() for t in fig.texts)
    (png_a, pdf_a), (png_b, pdf_b) = paths
    assert png_a.read_bytes() == png_b.read_bytes() and pdf_a.read_bytes() == pdf_b.read_bytes()
    assert png_a.read_bytes()[:4] == b"\x89PNG" and pdf_a.read_bytes()[:4] == b"%PDF"
    with Image.open(png_a) as img:
        assert img.size[0] == round(3.4 * plots.DPI), "the PNG is 3.4 in wide at 300 dpi: no cropping"
    assert b"/FontFile2" in pdf_a.read_bytes() and b"/Type3" not in pdf_a.read_bytes(), "TrueType, not Type 3 fonts"


def test_outputs_write_only_what_the_notebook_declares(tmp_path):
    out = outputs.Outputs("06_claims", tmp_path, "smoke")
    assert set(out.missing()) == set(outputs.analysis_files(tmp_path, "06_claims", profile="smoke"))
    out.table(pd.DataFrame({"claim": ["a"], "verdict": ["holds"]}), "06_claims")
    with pytest.raises(ValueError, match="declares no figure 'other'.*declared: 06_claims"):
        out.figure(None, "other")
    assert [p.name for p in out.missing() if p.suffix in (".png", ".pdf")] == ["06_claims.png", "06_claims.pdf"]
    assert not [p for p in out.missing() if p.stem == "06_claims" and p.suffix in (".csv", ".md", ".tex")]
    assert "notebooks/06_claims.ipynb" in (tmp_path / "tables" / "06_claims.md").read_text()
    with pytest.raises(ValueError, match="unknown analysis notebook"):
        outputs.Outputs("07_more", tmp_path, "smoke")


def test_a_figure_drawn_at_another_width_than_declared_is_refused(tmp_path):
    out = outputs.Outputs("05_retrieval", tmp_path, "smoke")
    declared = {i.name: i.width for i in outputs.ANALYSIS["05_retrieval"] if i.kind == "figure"}
    assert declared["05_retrieval_bars"] == "column" and declared["05_tradeoff"] == "page"
    with pytest.raises(ValueError, match=r"05_retrieval_bars is drawn 7.00 in wide, but declared column width "
                                         r"\(3.4 in\).*width='column'"):
        out.figure(plt.figure(figsize=(plots.WIDTHS["page"], 2)), "05_retrieval_bars")
    assert not (tmp_path / "05_retrieval_bars.png").exists()
    out.figure(plt.figure(figsize=(plots.WIDTHS["column"], 2)), "05_retrieval_bars")
    assert (tmp_path / "05_retrieval_bars.png").exists()


@pytest.mark.parametrize("profile", ["demo", "paper_schedule", "fair"])
def test_every_committed_figure_is_printed_at_its_declared_width(profile):
    """The PNGs of figures/<profile>/ are their declared width at 300 dpi (the width their text sizes are
    checked at: test_every_figure_prints_at_its_width_with_8pt_text_and_no_overlaps)."""
    from PIL import Image

    folder = ROOT / "figures" / profile
    for item in (i for nb in outputs.ANALYSIS for i in outputs.items(nb, profile) if i.kind == "figure"):
        with Image.open(folder / f"{item.name}.png") as img:
            assert img.size[0] == round(plots.WIDTHS[item.width] * plots.DPI), \
                f"{profile}/{item.name}.png is not {item.width} width ({plots.WIDTHS[item.width]} in)"


def test_every_output_name_is_unique_and_starts_with_its_notebook_number():
    names = [(i.kind, i.name) for items in outputs.ANALYSIS.values() for i in items]
    assert len(names) == len(set(names))
    for nb, items in outputs.ANALYSIS.items():
        assert all(i.name.startswith(nb[:3]) and i.kind in ("figure", "table") for i in items)
    assert set(outputs.ANALYSIS) == set(outputs.NOTEBOOKS[2:]) - {outputs.YOUR_DATA}


def test_index_lists_every_figure_and_table_with_its_notebook(tmp_path):
    path = outputs.write_index(tmp_path, "demo", "minutes")
    text = path.read_text()
    for nb in outputs.ANALYSIS:
        for item in outputs.items(nb, "demo"):
            assert f"`{item.name}`" in text
        assert f"notebooks/{nb}.ipynb" in text
    assert "make demo" in text


def test_selection_and_seed_parsing():
    assert workflow.select(None, ("a", "b"), "loss") == ["a", "b"]
    assert workflow.select("b, a", ("a", "b"), "loss") == ["b", "a"]
    with pytest.raises(ValueError, match=r"unknown loss\(s\) \['c'\] of profile 'p'; choose from: a, b"):
        workflow.select(["a", "c"], ("a", "b"), "loss", "p")
    assert workflow.parse_seeds("", (0, 1)) == [0, 1] and workflow.parse_seeds("3,4", (0,)) == [3, 4]
    assert workflow.parse_seeds([5], (0,)) == [5]
    for bad in ("-1", "x", "1.5"):
        with pytest.raises(ValueError, match="non-negative integers"):
            workflow.parse_seeds(bad, (0,))


def test_kernel_start_failures_are_told_apart_from_cell_errors():
    from papermill.exceptions import PapermillExecutionError

    assert workflow.is_kernel_start_failure(RuntimeError("Kernel died before replying to kernel_info"))
    assert workflow.is_kernel_start_failure(RuntimeError("Kernel didn't respond in 60 seconds"))
    assert not workflow.is_kernel_start_failure(ValueError("unknown loss"))
    assert not workflow.is_kernel_start_failure(
        PapermillExecutionError(0, 1, "ValueError", "ValueError", "Kernel died before replying", []))
    assert workflow.failed_copy("a/02_train.ipynb").as_posix() == "a/02_train.failed.ipynb"


@pytest.mark.parametrize("last", [1, 3, 9, 10, 120, 4000])
def test_the_step_axis_is_ticked_at_0_and_each_power_of_ten_up_to_the_last_step(last):
    fig, ax = plt.subplots()
    plots._log_steps(ax, float(last))
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[:2] == ["0", "1"] and len(labels) == 2 + int(math.floor(math.log10(last)))


def test_a_metric_has_one_axis_scale_and_range_across_datasets():
    """tradeoff: a speed spanning decades on one dataset only is still drawn on one scale for both;
    metric_dots: one metric's panels share their x range across datasets."""
    frame = summary_table(datasets=("a", "b"))
    narrow = frame["dataset"] == "b"
    frame.loc[narrow, "val_convergence_step"] = 100.0 + frame.loc[narrow, "seed"]  # b: no decades
    fig = plots.tradeoff(frame, progress_table(datasets=("a", "b")), width="page")
    visible = [ax for ax in fig.axes if ax.get_visible() and ax.get_title(loc="left") in ("a", "b")]
    assert {ax.get_title(loc="left") for ax in visible} == {"a", "b"}
    assert len({ax.get_xscale() for ax in visible}) == 1
    plt.close(fig)
    frame.loc[narrow, "intra_var"] += 0.5  # b's variances sit elsewhere: a shared range must hold both
    fig = plots.metric_dots(frame, ["intra_var"], width="page")
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_xlabel()]
    assert len(panels) == 2 and panels[0].get_xlim() == panels[1].get_xlim()
    plt.close(fig)


def test_a_metric_whose_one_range_would_squeeze_a_dataset_keeps_a_range_per_dataset_and_says_so():
    frame = summary_table(datasets=("a", "b"))
    frame.loc[frame["dataset"] == "b", "intra_var"] *= 20  # a's values would fill a twentieth of one range
    fig = plots.metric_dots(frame, ["intra_var", "recall@1"], width="page")
    by_metric = {}
    for ax in fig.axes:
        if ax.get_visible() and ax.get_xlabel():
            by_metric.setdefault(ax.get_xlabel().split()[0], []).append(ax.get_xlim())
    assert by_metric["intra-class"][0] != by_metric["intra-class"][1]
    assert by_metric["Recall@1"][0] == by_metric["Recall@1"][1]
    assert any("own x range" in t for _, t, _ in [(None, x.get_text(), None) for x in fig.texts])
    plt.close(fig)


def test_the_survival_grid_marks_each_paper_cell_with_the_claims_fate_and_colours_it_by_verdict():
    table = survival_table()
    fig = plots.survival_grid(table, width="page")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    coloured = table[table["paper_verdict"].isin(plots.VERDICT_COLOURS)]
    for fate, mark in plots.SURVIVAL_MARKS.items():
        assert texts.count(mark) == int((coloured["survival"] == fate).sum()), fate
    faces = [p.get_facecolor() for ax in fig.axes for p in ax.patches]
    from matplotlib.colors import to_rgba

    assert faces.count(to_rgba(plots.VERDICT_COLOURS["supported"])) == int(
        (table["paper_verdict"] == "supported").sum() + (table.drop_duplicates(["claim", "dataset"])["fair_verdict"]
                                                       == "supported").sum())


def test_a_tuned_profile_writes_its_own_claims_outputs_and_an_untuned_one_the_schedules(tmp_path):
    """The fair build's 06_claims adds the survival table and figure, the tuned settings and every
    run's convergence; the comparison of two schedules is the paper-protocol profiles' (the fair one
    sets both of them beside it in the survival table instead)."""
    fair_only = {("table", "06_survival"), ("figure", "06_survival"), ("table", "06_tuned"), ("table", "06_convergence")}
    declared = {(i.kind, i.name) for i in outputs.ANALYSIS["06_claims"]}
    assert fair_only <= declared and ("table", "06_schedules") in declared
    for profile, tuned in (("fair", True), ("demo", False), ("paper_schedule", False), ("smoke", False)):
        names = {(i.kind, i.name) for i in outputs.items("06_claims", profile)}
        assert (fair_only <= names) == tuned and bool(fair_only & names) == tuned
        assert (("table", "06_schedules") in names) is not tuned
        assert ("table", "06_claims") in names and ("figure", "06_claims") in names
        files = set(outputs.analysis_files(tmp_path, "06_claims", profile=profile))
        assert files == {p for i in outputs.items("06_claims", profile) for p in i.files(tmp_path)}
        assert set(outputs.Outputs("06_claims", tmp_path, profile).missing()) == files
    assert set(outputs.analysis_files(tmp_path)) >= set(outputs.analysis_files(tmp_path, profile="fair"))
    index = outputs.write_index(tmp_path / "fair", "fair").read_text()
    assert "`06_survival`" in index and "`06_schedules`" not in index
    assert "`06_survival`" not in outputs.write_index(tmp_path / "demo", "demo").read_text()


def test_probe_readings_draw_each_loss_at_its_shares_of_training_per_batch_and_dataset():
    table = probes_table()
    fig = plots.probe_readings(table, width="page")
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.lines]
    assert len(axes) == len(DATASETS) * len(plots.PROBE_METRICS) * 2  # rows dataset x metric, a column per batch
    first = axes[0]  # the first dataset's tuple_active_ratio on the random batch
    sub = table[(table["dataset"] == sorted(DATASETS)[0]) & (table["batch"] == "random")]
    for line in first.lines:
        want = sub[sub["loss"] == line.get_label()].groupby("fraction")["tuple_active_ratio"].mean()
        np.testing.assert_allclose(line.get_xdata(), want.index)
        np.testing.assert_allclose(line.get_ydata(), want.to_numpy())
    assert {line.get_label() for line in first.lines} == set(LOSSES)
    assert axes[4].get_yscale() == "log" and axes[2].get_yscale() == "linear"  # row 3: emb_grad_norm_mean spans decades
    with pytest.raises(ValueError, match="fraction"):
        plots.probe_readings(table.drop(columns="fraction"))


def test_the_claims_figure_says_what_a_grey_not_judged_claim_is():
    table = claims_table()
    def header(fig) -> str:
        return " ".join(legend.get_title().get_text() for legend in fig.legends)

    assert "unconverged" not in header(plots.claims_intervals(table))
    table.loc[0, "verdict"] = "not judged: unconverged"
    assert "unconverged" in header(plots.claims_intervals(table))


def test_the_stability_grid_shades_each_cell_by_its_share_and_blanks_a_loss_a_claim_does_not_name():
    table = stability_table()
    fig = plots.stability_grid(table, width="page")
    ax = fig.axes[0]
    printed = [t.get_text() for t in ax.texts if t.get_text() not in ("fashionmnist", "synthetic")]
    expected = [{0.0: "0", 1.0: "1"}.get(v, f"{v:.1f}".lstrip("0")) for v in table["share_holds"]]
    assert sorted(p for p in printed if p != "\u2013") == sorted(expected)
    n_cells = table["claim"].nunique() * 2 * table["loss"].nunique()
    assert printed.count("\u2013") == n_cells - len(table)
    with pytest.raises(ValueError, match="share_holds"):
        plots.stability_grid(table.drop(columns="share_holds"))
    empty = plots.stability_grid(table.iloc[:0], width="column")
    assert any("no fair verdict" in t.get_text() for ax in empty.axes for t in ax.texts)
