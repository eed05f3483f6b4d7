"""vgcore.report.analysis: seed aggregation, table writing and the claim checks on hand-made summaries."""

import numpy as np
import pandas as pd
import pytest

from vgcore.losses import LOSSES
from vgcore.report.analysis import CLAIMS, aggregate, check_claims, mean_std_table, write_table


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


def test_claims_hold_or_fail_on_crafted_layouts():
    base = {loss: [1.0, 1.0] for loss in LOSSES}
    holds = summary_table({**base, "triplet": [2.0, 2.2], "contrastive": [0.5, 0.6]})
    fails = summary_table({**base, "scl": [0.1, 0.1], "triplet": [0.1, 0.2], "infonce": [3.0, 3.0]})
    variance_claim = [c for c in CLAIMS if c.key == "triplet_scl_keep_variance"]
    r = check_claims(holds, variance_claim).iloc[0]
    assert r.holds and r.group_best == "triplet" and r.rest_best == "infonce"
    assert r.group_mean == pytest.approx(2.1) and r.n_seeds == 2
    assert not check_claims(fails, variance_claim).iloc[0].holds
    compact = [c for c in CLAIMS if c.key == "contrastive_infonce_compact"]  # lower is better
    assert check_claims(holds, compact).iloc[0].holds


def test_fine_grained_claims_skip_coarse_datasets():
    claim = [c for c in CLAIMS if c.fine_grained_only]
    table = pd.concat([summary_table({x: [0.5] for x in LOSSES}, "recall@1", d) for d in ("cifar10", "cub200")])
    out = check_claims(table, claim)
    assert list(out["dataset"]) == ["cub200"]
