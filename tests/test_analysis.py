"""vgcore.report.analysis: seed aggregation and table writing on hand-made summaries (claims: test_claims.py)."""

import numpy as np
import pandas as pd
import pytest

from vgcore.report.analysis import aggregate, mean_std_table, write_table


def summary_table(values: dict[str, list[float]], metric="intra_var", dataset="synthetic"):
    rows = [{"dataset": dataset, "loss": loss, "seed": s, metric: v}
            for loss, vals in values.items() for s, v in enumerate(vals)]
    return pd.DataFrame(rows)


def test_aggregate_gives_seed_mean_std_and_count_in_loss_order():
    table = summary_table({"scl": [1.0, 3.0], "contrastive": [2.0, 2.0, 5.0]})
    agg = aggregate(table, ["intra_var"])
    assert list(agg.index.get_level_values("loss")) == ["contrastive", "scl"]  # LOSSES order, not alphabetical
    assert agg.loc[("synthetic", "scl"), ("intra_var", "mean")] == 2.0
    assert agg.loc[("synthetic", "scl"), ("intra_var", "std")] == pytest.approx(np.sqrt(2.0))
    assert agg.loc[("synthetic", "contrastive"), ("intra_var", "n")] == 3
    with pytest.raises(ValueError, match="not in the summary table"):
        aggregate(table, ["recall@1"])


def test_mean_std_table_formats_single_seeds_without_spread():
    table = summary_table({"triplet": [0.5], "npair": [0.25, 0.75]})
    out = mean_std_table(table, ["intra_var"], digits=2)
    assert out.set_index("loss").loc["triplet", "intra_var"] == "0.50"
    assert out.set_index("loss").loc["npair", "intra_var"] == "0.50 ± 0.35"


def test_write_table_names_the_notebook_in_every_text_format(tmp_path):
    table = pd.DataFrame({"loss": ["scl"], "recall@1": ["0.9"]})
    paths = write_table(table, tmp_path / "t" / "main", "Retrieval", "05_retrieval.ipynb")
    assert [p.suffix for p in paths] == [".csv", ".md", ".tex"]
    assert pd.read_csv(paths[0]).equals(pd.DataFrame({"loss": ["scl"], "recall@1": [0.9]}))
    for p in paths[1:]:
        assert "notebooks/05_retrieval.ipynb" in p.read_text()
    assert "recall@1" in paths[2].read_text() and "\\begin{table}" in paths[2].read_text()


def test_normalised_progress_reads_each_run_from_its_untrained_to_its_final_value():
    from vgcore.report.analysis import normalised_progress

    rows = []
    for seed, curve in ((0, [0.80, 0.85, 0.90]), (1, [0.5, 0.4, 0.5])):  # seed 1 never rose: left out
        for step, r in zip((0, 2, 8), curve, strict=True):
            rows.append({"dataset": "d", "loss": "triplet", "seed": seed, "step": step, "split": "progress/validation",
                         "recall@1": r})
            rows.append({"dataset": "d", "loss": "triplet", "seed": seed, "step": step,
                         "split": "progress/train_subset", "recall@1": 0.0})
    rows.append({"dataset": "d", "loss": "triplet", "seed": 0, "step": 8, "split": "test", "recall@1": 0.3})
    out = normalised_progress(pd.DataFrame(rows))
    assert out["seed"].unique().tolist() == [0]
    np.testing.assert_allclose(out["progress"], [0.0, 0.5, 1.0])
    assert out["step"].tolist() == [0, 2, 8]
