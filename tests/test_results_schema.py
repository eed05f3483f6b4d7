"""vgcore.results: a run directory as written, read back, collected, and judged complete.

Behaviour only (PROTOCOL.md, Training, "completeness"): a run written by ``train.run`` is complete
for its own config hash; a different config, a summary.json that cannot be read, or a run whose
summary.json is missing is not, so a sweep reruns it. The runs are real one-epoch smoke runs, so
these tests hold whatever the summary records besides the hash and the schema version.
"""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from vgcore import results, train
from vgcore.config import get_profile

LOSSES = ("contrastive", "triplet")
FILES = ["config.json", "embeddings.npz", "epochs.csv", "steps.csv", "summary.json"]


def _config(loss="contrastive", **overrides):
    """The smoke profile's own config (its runs live in the profile's folder), or one with overrides."""
    return get_profile("smoke").config("synthetic", loss, 0, **overrides)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Two finished runs and one that never finished, under one results root."""
    root = tmp_path_factory.mktemp("results")
    for loss in LOSSES:
        config = _config(loss)
        train.run(config, results.run_dir(root, config), cache_dir=root.parent / "cache", progress=False)
    (root / "unfinished").write_text(str(results.start_run(results.run_dir(root, _config("scl")), _config("scl"))))
    return root


@pytest.fixture
def run_copy(root, tmp_path):
    config = _config()
    shutil.copytree(results.run_dir(root, config), tmp_path / "run")
    return tmp_path / "run", config


# ------------------------------------------------------------------ is_complete


def test_a_finished_run_is_complete_for_its_own_config(run_copy):
    path, config = run_copy
    assert results.is_complete(path, config.config_hash())
    assert results.is_complete(path)


@pytest.mark.parametrize("change", [{"epochs": 2}, {"lr": 0.5}, {"loss_params": {"margin": 0.7}}])
def test_a_run_of_another_config_is_not_complete(run_copy, change):
    path, config = run_copy
    other = _config(**change)
    assert other.config_hash() != config.config_hash()
    assert not results.is_complete(path, other.config_hash())
    assert not results.is_complete(path, "")


@pytest.mark.parametrize("content", ["truncated", "", "{", "\x00\x01 not json"])
def test_an_unreadable_summary_is_not_complete(run_copy, content):
    path, config = run_copy
    full = (path / "summary.json").read_text()
    (path / "summary.json").write_text(full[: len(full) // 2] if content == "truncated" else content)
    assert not results.is_complete(path, config.config_hash())


def test_a_summary_that_is_a_directory_is_not_complete(run_copy):
    path, config = run_copy
    (path / "summary.json").unlink()
    (path / "summary.json").mkdir()
    assert not results.is_complete(path, config.config_hash())
    assert not results.is_complete(path)


def test_a_run_without_summary_is_not_complete(run_copy, tmp_path):
    path, config = run_copy
    (path / "summary.json").unlink()
    assert not results.is_complete(path, config.config_hash())
    assert not results.is_complete(path)
    assert not results.is_complete(tmp_path / "never-ran", config.config_hash())


def test_a_run_of_another_schema_version_is_stale(run_copy):
    path, config = run_copy
    summary = json.loads((path / "summary.json").read_text())
    assert summary["schema_version"] == results.SCHEMA_VERSION
    del summary["schema_version"]  # as written before versions were recorded: version 1
    del summary[results.SEAL]  # nor seals
    (path / "summary.json").write_text(json.dumps(summary))
    assert not results.is_complete(path, config.config_hash())  # a sweep reruns it
    assert results.is_complete(path)  # still readable
    summary["schema_version"] = results.SCHEMA_VERSION + "-older"
    (path / "summary.json").write_text(json.dumps(summary))
    assert not results.is_complete(path, config.config_hash())


# ------------------------------------------------------------------ the run directory


def test_a_run_directory_reads_back_what_it_holds(root):
    config = _config()
    path = results.run_dir(root, config)
    assert path == root / "smoke" / "synthetic" / "contrastive" / "seed0"
    assert sorted(p.name for p in path.iterdir()) == FILES
    record = results.load_run(path)
    assert record["config"] == json.loads(json.dumps(config.to_dict()))
    assert record["summary"] == json.loads((path / "summary.json").read_text())
    for table, columns in (("steps", results.STEP_COLUMNS), ("epochs", results.EPOCH_COLUMNS)):
        assert tuple(record[table].columns) == columns
        pd.testing.assert_frame_equal(record[table], pd.read_csv(path / f"{table}.csv"))
    z, y = record["embeddings"]
    with np.load(path / "embeddings.npz") as npz:
        assert npz["z"].dtype == np.float16 and npz["y"].dtype == np.int64
        np.testing.assert_array_equal(z, npz["z"].astype(np.float32))
        np.testing.assert_array_equal(y, npz["y"])
    assert z.dtype == np.float32 and z.shape == (len(y), config.embedding_dim)


def test_an_unfinished_run_reads_back_without_summary_or_tables(root):
    record = results.load_run((root / "unfinished").read_text())  # the staging folder of a run never finished
    assert record["config"]["loss"] == "scl"
    assert record["summary"] is None and record["steps"] is None and record["epochs"] is None
    assert "embeddings" not in record


def test_start_run_stages_beside_the_run_and_leaves_it_as_it_is(run_copy):
    path, config = run_copy
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    staging = results.start_run(path, _config(lr=0.5))
    assert staging.parent == path.parent and staging.name.startswith(f".tmp-{path.name}.")
    assert sorted(p.name for p in staging.iterdir()) == ["config.json"]
    assert json.loads((staging / "config.json").read_text())["lr"] == 0.5
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before


def test_tables_are_written_in_the_schema_order(tmp_path):
    steps = pd.DataFrame({"train_loss": [0.5, 0.25], "step": [0, 1], "not_in_schema": [1, 2]})
    epochs = pd.DataFrame({"split": ["test"], "epoch": [0]})
    results.write_tables(tmp_path, steps, epochs)
    back = pd.read_csv(tmp_path / "steps.csv")
    assert tuple(back.columns) == results.STEP_COLUMNS
    assert back["step"].tolist() == [0, 1] and back["train_loss"].tolist() == [0.5, 0.25]
    assert back["active_ratio"].isna().all()
    assert tuple(pd.read_csv(tmp_path / "epochs.csv").columns) == results.EPOCH_COLUMNS


# ------------------------------------------------------------------ collect


def test_collect_returns_every_complete_run_with_its_ids(root):
    epochs = results.collect(root, "epochs")
    assert list(epochs.columns) == [*results.RUN_ID_COLUMNS, "config_hash", *results.EPOCH_COLUMNS]
    assert sorted(set(epochs["loss"])) == sorted(LOSSES)  # the unfinished scl run is left out
    for loss in LOSSES:
        config = _config(loss)
        mine = epochs[epochs["loss"] == loss]
        expect = pd.read_csv(results.run_dir(root, config) / "epochs.csv")
        pd.testing.assert_frame_equal(mine[list(results.EPOCH_COLUMNS)].reset_index(drop=True), expect)
        ids = {"profile": "smoke", "dataset": "synthetic", "backbone": config.backbone, "loss": loss,
               "seed": 0, "config_hash": config.config_hash()}
        for key, value in ids.items():
            assert (mine[key] == value).all(), key
    assert list(epochs.index) == list(range(len(epochs)))  # one index over all runs
    steps = results.collect(root, "steps")
    assert list(steps.columns) == [*results.RUN_ID_COLUMNS, "config_hash", *results.STEP_COLUMNS]
    assert list(steps.index) == list(range(len(steps)))
    assert len(steps) == sum(len(pd.read_csv(results.run_dir(root, _config(loss)) / "steps.csv")) for loss in LOSSES)


def test_collect_summary_has_one_row_per_run_from_summary_json(root):
    summary = results.collect(root, "summary").set_index("loss")
    assert sorted(summary.index) == sorted(LOSSES)
    for loss in LOSSES:
        written = json.loads((results.run_dir(root, _config(loss)) / "summary.json").read_text())
        row = summary.loc[loss]
        assert row["config_hash"] == written["config_hash"]
        flat = {**written["final"], **written["convergence"], **written["greediness_mean"],
                "wall_time_s": written["wall_time_s"], "steps_per_s": written["steps_per_s"]}
        for key, value in flat.items():
            assert row[key] == pytest.approx(value, nan_ok=True), key
    for col in ("recall@1", "map@r", "intra_var", "loss_convergence_epoch", "active_ratio_mean"):
        assert col in summary.columns


def test_a_summary_records_the_timings_of_its_group(root):
    """The keys snapshot.VOLATILE blanks, and the fused group's size: one run trained alone on the CPU."""
    written = json.loads((results.run_dir(root, _config()) / "summary.json").read_text())
    assert 0 < written["eval_time_s"] < written["wall_time_s"]
    assert 0 < written["steps_per_s"] and written["n_steps"] > 0
    assert written["group_size"] == 1 and written["cuda_graph"] is False


def test_collect_filters_by_profile_and_names_the_tables(root, tmp_path):
    assert len(results.collect(root, "summary", profile="smoke")) == len(LOSSES)
    assert results.collect(root, "summary", profile="demo").empty
    with pytest.raises(ValueError, match="unknown table 'nope'; choose one of: epochs, steps, summary"):
        results.collect(root, "nope")
    for table, columns in (("steps", results.STEP_COLUMNS), ("epochs", results.EPOCH_COLUMNS), ("summary", ())):
        frame = results.collect(tmp_path, table)
        assert frame.empty and list(frame.columns) == [*results.RUN_ID_COLUMNS, "config_hash", *columns]
    assert list(results.collect(tmp_path).columns)[-len(results.EPOCH_COLUMNS):] == list(results.EPOCH_COLUMNS)
