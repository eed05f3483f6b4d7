"""vgcore.report.plots, the declared outputs and the workflow helpers, on hand-made tables in the results schema."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vgcore import workflow
from vgcore.losses import LOSSES
from vgcore.report import outputs, plots

rng = np.random.default_rng(0)


def summary_table(datasets=("synthetic", "fashionmnist"), seeds=(0, 1)) -> pd.DataFrame:
    rows = [{"profile": "smoke", "dataset": d, "loss": loss, "seed": s, "intra_var": rng.random(),
             "inter_var": rng.random(), "centroid_dist_mean": rng.random(), "centroid_dist_cv": rng.random(),
             "recall@1": rng.random(), "map@r": rng.random(), "loss_convergence_step": int(rng.integers(1, 500)),
             "active_ratio_mean": rng.random()}
            for d in datasets for loss in LOSSES for s in seeds]
    return pd.DataFrame(rows)


def epochs_table(n_epochs=3) -> pd.DataFrame:
    rows = [{"dataset": "synthetic", "loss": loss, "seed": s, "epoch": e, "split": split, "train_loss": rng.random(),
             "intra_var": rng.random(), "inter_var": rng.random(), "recall@1": rng.random()}
            for loss in LOSSES for s in (0, 1) for e in range(n_epochs + 1) for split in ("test", "train_subset")]
    return pd.DataFrame(rows)


def steps_table(n=30) -> pd.DataFrame:
    rows = [{"dataset": "synthetic", "loss": loss, "seed": s, "step": i, "epoch": i // 10 + 1, "train_loss": 1 / (i + 1),
             "active_ratio": rng.random(), "grad_active_ratio": rng.random(), "tuple_active_ratio": rng.random(),
             "grad_effective_share": rng.random(),
             "grad_norm": rng.random() + 0.1, "emb_grad_norm_mean": rng.random() + 0.1}
            for loss in LOSSES for s in (0, 1) for i in range(n)]
    return pd.DataFrame(rows)


@pytest.fixture(autouse=True)
def _style():
    plots.use_style()


def test_every_loss_has_its_own_fixed_colour():
    from vgcore.registry import VARIANTS, names

    full = plots.loss_palette()
    assert list(full) == list(names("loss")) and len(set(full.values())) == len(names("loss"))
    assert plots.loss_palette(["scl", "triplet"]) == {"scl": full["scl"], "triplet": full["triplet"]}
    for variant, base in VARIANTS.items():  # a lighter shade of its loss's colour
        assert all(v >= b for v, b in zip(full[variant], full[base], strict=True))


def test_run_curves_draws_the_six_panels_of_one_run():
    steps, epochs = steps_table(), epochs_table()
    one = lambda t: t[(t.loss == "triplet") & (t.seed == 0)]  # noqa: E731
    fig = plots.run_curves(one(steps), one(epochs), title="triplet")
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 6
    with pytest.raises(ValueError, match="needs columns"):
        plots.run_curves(one(steps).drop(columns="active_ratio"), one(epochs))


def test_figures_across_runs_have_one_panel_per_dataset_and_metric():
    summary = summary_table()
    assert len(plots.metric_bars(summary, ["intra_var", "inter_var"]).axes) == 4
    assert len([a for a in plots.metric_over_epochs(epochs_table(), "intra_var").axes if a.get_visible()]) == 1
    assert len(plots.metric_over_steps(steps_table(), ["active_ratio", "grad_norm"], logy=["grad_norm"]).axes) == 2
    assert len(plots.tradeoff(summary).axes) == 2
    emb = {"synthetic": {loss: (rng.normal(size=(40, 8)), np.repeat(np.arange(4), 10)) for loss in ("npair", "scl")}}
    assert len([a for a in plots.embedding_projections(emb).axes if a.get_visible()]) == 2
    with pytest.raises(ValueError, match="no rows of split"):
        plots.metric_over_epochs(epochs_table(), "intra_var", split="val")
    with pytest.raises(ValueError, match="empty"):
        plots.metric_bars(summary.iloc[:0], ["intra_var"])


def test_a_constant_metric_gets_a_readable_axis():
    steps = steps_table().assign(grad_active_ratio=1.0)
    steps.loc[steps.index[-1], "grad_active_ratio"] = 1.0 - 3e-5  # a rounding-level dip
    ax = plots.metric_over_steps(steps, ["grad_active_ratio"]).axes[0]
    lo, hi = ax.get_ylim()
    assert hi - lo >= 0.02 * 0.999 and lo < 1.0 - 3e-5 and hi > 1.0
    ax.figure.canvas.draw()
    assert ax.yaxis.get_major_formatter().get_offset() == ""


def test_claims_intervals_draw_each_verdict_with_its_interval_and_survive_an_empty_table():
    claims = pd.DataFrame({"claim": ["a", "a", "b"], "dataset": ["x", "y", "x"],
                           "verdict": ["supported", "contradicted", "inconclusive"],
                           "diff": [0.2, -0.3, 0.01], "ci_low": [0.1, -0.5, np.nan], "ci_high": [0.3, -0.1, np.nan],
                           "ref_mean": [2.0, 1.0, 1.0]})
    fig = plots.claims_intervals(claims)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title(loc="left") for ax in panels] == ["x", "y"]
    lines = [ln for ln in panels[0].lines if len(ln.get_xdata()) == 2 and ln.get_ydata()[0] == 0]
    assert list(lines[0].get_xdata()) == [0.05, 0.15]  # interval in units of the rest mean
    empty = plots.claims_intervals(claims.iloc[:0])
    assert "no claim checked" in empty.axes[0].texts[0].get_text()


def test_save_figure_writes_png_and_pdf_naming_the_notebook_and_is_byte_stable(tmp_path):
    paths = []
    for name in ("a", "b"):
        fig = plots.metric_bars(summary_table(seeds=(0,)).assign(intra_var=1.0), ["intra_var"])
        paths.append(plots.save_figure(fig, tmp_path / name, "03_variance.ipynb", "demo"))
        assert any("notebooks/03_variance.ipynb · profile demo" in t.get_text() for t in fig.texts)
    for (png_a, pdf_a), (png_b, pdf_b) in [paths]:
        assert png_a.read_bytes() == png_b.read_bytes() and pdf_a.read_bytes() == pdf_b.read_bytes()
        assert png_a.read_bytes()[:4] == b"\x89PNG" and pdf_a.read_bytes()[:4] == b"%PDF"


def test_outputs_write_only_what_the_notebook_declares(tmp_path):
    out = outputs.Outputs("06_claims", tmp_path, "smoke")
    assert set(out.missing()) == set(outputs.analysis_files(tmp_path, "06_claims"))
    out.table(pd.DataFrame({"claim": ["a"], "verdict": ["holds"]}), "06_claims")
    with pytest.raises(ValueError, match="declares no figure 'other'.*declared: 06_claims"):
        out.figure(None, "other")
    assert [p.name for p in out.missing() if p.suffix in (".png", ".pdf")] == ["06_claims.png", "06_claims.pdf"]
    assert not [p for p in out.missing() if p.stem == "06_claims" and p.suffix in (".csv", ".md", ".tex")]
    assert "notebooks/06_claims.ipynb" in (tmp_path / "tables" / "06_claims.md").read_text()
    with pytest.raises(ValueError, match="unknown analysis notebook"):
        outputs.Outputs("07_more", tmp_path, "smoke")


def test_every_output_name_is_unique_and_starts_with_its_notebook_number():
    names = [(i.kind, i.name) for items in outputs.ANALYSIS.values() for i in items]
    assert len(names) == len(set(names))
    for nb, items in outputs.ANALYSIS.items():
        assert all(i.name.startswith(nb[:3]) and i.kind in ("figure", "table") for i in items)
    assert set(outputs.ANALYSIS) == set(outputs.NOTEBOOKS[2:]) - {outputs.YOUR_DATA}


def test_index_lists_every_figure_and_table_with_its_notebook(tmp_path):
    path = outputs.write_index(tmp_path, "demo", "minutes")
    text = path.read_text()
    for nb, items in outputs.ANALYSIS.items():
        for item in items:
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
