"""Training to convergence and data drawn per seed (issue 25, PROTOCOL.md "Fair comparison").

The stopping rule is checked by hand on score sequences, then in the loop: each run's record is
recomputed from the validation readings it logged, its reported head is its best epoch's, and a
run that stops inside a fused group equals the same run trained alone.
"""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch

from vgcore import results, train
from vgcore.config import LATER_FIELDS, Profile, RunConfig, get_profile
from vgcore.train.samplers import draw_seed, fixed_subset_index, split_off
from vgcore.train.stopping import EarlyStopping

SMOKE = get_profile("smoke")


def head_with(value: float) -> torch.nn.Linear:
    head = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        head.weight.fill_(value)
    return head


def run_rule(scores, patience, min_delta):
    """Feed `scores` (epoch 0, 1, ...) to the rule; the epoch it stops at (None: never) and the
    stopper. Each epoch's head carries its epoch as its weight, so the restored head names its epoch."""
    stopper = EarlyStopping(patience, min_delta)
    for epoch, score in enumerate(scores):
        if stopper.update(epoch, score, head_with(epoch)):
            return epoch, stopper
    return None, stopper


def test_the_rule_stops_after_patience_epochs_without_a_gain_above_min_delta():
    # 0.5 then +0.25 exactly (not more than min_delta: no gain), then one real gain at epoch 3
    stop, stopper = run_rule([0.5, 0.75, 0.625, 0.875, 0.875, 0.9375, 0.5], patience=3, min_delta=0.25)
    assert (stop, stopper.best_epoch, stopper.best_score) == (6, 3, 0.875)
    head = head_with(-1.0)
    stopper.restore(head)
    assert head.weight.flatten().tolist() == [3.0, 3.0]  # the weights of epoch 3, not the last ones


def test_nan_is_never_a_gain_and_an_untrained_best_is_reported_as_epoch_0():
    stop, stopper = run_rule([0.25, math.nan, 0.125, 0.25], patience=3, min_delta=0.0)
    assert (stop, stopper.best_epoch) == (3, 0)
    record = stopper.record(3, "patience")
    assert record["converged"] and record["best_epoch"] == 0 and record["stop_epoch"] == 3


def test_a_run_that_reaches_the_budget_is_unconverged():
    stop, stopper = run_rule([0.1, 0.2, 0.3, 0.4], patience=2, min_delta=0.0)
    assert stop is None
    assert stopper.record(3, "budget") | {} == {"patience": 2, "min_delta": 0.0, "best_epoch": 3, "best_val_map@r": 0.4,
                                                "stop_epoch": 3, "stopped_by": "budget", "converged": False}
    with pytest.raises(ValueError, match="stopped_by"):
        stopper.record(3, "tired")


def test_patience_needs_a_validation_split():
    with pytest.raises(ValueError, match="val_size"):
        SMOKE.config("synthetic", "triplet", 0, patience=3)
    with pytest.raises(ValueError, match="min_delta"):
        SMOKE.config("synthetic", "triplet", 0, patience=3, val_size=40, min_delta=-1)


def stopping_config(loss, **overrides):
    return SMOKE.config("synthetic", loss, 0, **{"epochs": 12, "val_size": 48, "patience": 2, "eval_every": 1,
                                                 **overrides})


@pytest.fixture(scope="module")
def stopped_group(tmp_path_factory):
    root = tmp_path_factory.mktemp("stopping")
    configs = [stopping_config(loss) for loss in ("contrastive", "triplet", "arcface", "scl")]
    runs = train.run_group(configs, [root / c.loss for c in configs], cache_dir=root / "cache", progress=False)
    return root, configs, runs


def test_each_run_stops_by_the_rule_applied_to_its_logged_validation_readings(stopped_group):
    _, configs, runs = stopped_group
    for config, res in zip(configs, runs, strict=True):
        val = res.epochs[res.epochs["split"] == train.loop.VALIDATION].sort_values("epoch")
        assert val["epoch"].tolist() == list(range(len(val)))  # epoch 0 (untrained) and every epoch after
        stop, stopper = run_rule(val["map@r"].tolist(), config.patience, config.min_delta)
        record = res.summary["stopping"]
        assert record["best_epoch"] == stopper.best_epoch
        assert record["stop_epoch"] == (stop if stop is not None else config.epochs) == int(val["epoch"].max())
        assert record["converged"] == (stop is not None)
        assert res.steps["epoch"].max() == record["stop_epoch"]  # it trained up to its stop, no further
    # the group's runs did not all stop together: the stream went on without the stopped ones
    assert len({r.summary["stopping"]["stop_epoch"] for r in runs}) > 1 or all(
        r.summary["stopping"]["stopped_by"] == "budget" for r in runs)


def test_the_reported_head_is_the_best_epochs(stopped_group):
    _, configs, runs = stopped_group
    for config, res in zip(configs, runs, strict=True):
        best = res.summary["stopping"]["best_epoch"]
        test_rows = res.epochs[res.epochs["split"] == config.eval_split].set_index("epoch")
        for key in ("recall@1", "intra_var", "inter_var"):
            assert res.summary["final"][key] == test_rows.loc[best, key]
        record = results.load_run(res.path)
        assert record["summary"]["stopping"] == res.summary["stopping"]


def test_a_run_that_stops_inside_a_group_equals_the_run_alone(stopped_group, tmp_path):
    root, configs, runs = stopped_group
    first_to_stop = min(range(len(runs)), key=lambda i: runs[i].summary["stopping"]["stop_epoch"])
    last = max(range(len(runs)), key=lambda i: runs[i].summary["stopping"]["stop_epoch"])
    for i in {first_to_stop, last}:
        alone = train.run(configs[i], tmp_path / configs[i].loss, cache_dir=root / "cache", progress=False)
        pd.testing.assert_frame_equal(alone.steps, runs[i].steps)
        pd.testing.assert_frame_equal(alone.epochs, runs[i].epochs)
        assert alone.summary["final"] == runs[i].summary["final"]


def test_the_summary_table_carries_the_stop(stopped_group):
    root, configs, runs = stopped_group
    frame = results.runs_frame([r.path for r in runs], "summary")
    assert frame["stopped_by"].tolist() == [r.summary["stopping"]["stopped_by"] for r in runs]
    assert frame["converged"].tolist() == [r.summary["stopping"]["converged"] for r in runs]


def test_a_budget_reached_is_flagged_unconverged(tmp_path):
    config = stopping_config("contrastive", epochs=3, patience=50)
    res = train.run(config, tmp_path / "run", cache_dir=tmp_path / "cache", progress=False)
    assert res.summary["stopping"]["stopped_by"] == "budget" and res.summary["stopping"]["converged"] is False
    assert res.summary["stopping"]["stop_epoch"] == 3


def test_probe_readings_are_kept_at_shares_of_each_runs_own_training_and_change_nothing(tmp_path):
    from vgcore.train.learner import make_learner
    from vgcore.train.probes import PROBE_FRACTIONS, probe_batches, probe_epochs, probe_reading
    from vgcore.train.samplers import fixed_subset

    config = stopping_config("triplet", epochs=6, probes=True)
    res = train.run(config, tmp_path / "probed", cache_dir=tmp_path / "cache", progress=False)
    plain = train.run(dataclasses.replace(config, probes=False), tmp_path / "plain", cache_dir=tmp_path / "cache",
                      progress=False)
    pd.testing.assert_frame_equal(res.steps, plain.steps)  # reading the probes changes no step
    pd.testing.assert_frame_equal(res.epochs, plain.epochs)
    assert "probes" not in plain.summary
    stop = res.summary["stopping"]["stop_epoch"]
    records = res.summary["probes"]
    assert [(r["fraction"], r["epoch"]) for r in records] == [
        (f, e) for f, e in zip(PROBE_FRACTIONS, probe_epochs(stop), strict=True) for _ in ("random", "pk")]
    assert [r["batch"] for r in records[:2]] == ["random", "pk"]
    # the epoch-0 readings are those of the untrained head on the fixed probe batches
    x, y = train.load_features(config, "train", cache_dir=tmp_path / "cache", progress=False)
    (x, y), _ = split_off(x, y, config.val_size)
    x, y = fixed_subset(x, y, config.train_size)
    learner = make_learner(config, x.shape[1], int(y.max()) + 1, torch.device("cpu"))
    for record, (name, idx) in zip(records[:2], probe_batches(y, config.batch_size).items(), strict=True):
        assert record["batch"] == name
        expected = probe_reading(learner, x[idx], y[idx])
        assert {k: record[k] for k in expected if not math.isnan(expected[k])} == {
            k: v for k, v in expected.items() if not math.isnan(v)}


# --- identity: a field added later keeps the committed runs' identity ------------------------------

def test_a_later_field_at_its_default_is_left_out_of_the_identity():
    config = SMOKE.config("synthetic", "triplet", 0)
    assert not set(LATER_FIELDS) & set(config.to_dict())
    old = {k: v for k, v in dataclasses.asdict(config).items() if k not in LATER_FIELDS}
    assert RunConfig.from_dict(old).config_hash() == config.config_hash()
    changed = SMOKE.config("synthetic", "triplet", 0, val_size=40, patience=3)
    assert changed.to_dict()["patience"] == 3
    assert changed.config_hash() != SMOKE.config("synthetic", "triplet", 0, val_size=40).config_hash()
    for name, default in LATER_FIELDS.items():  # the table holds the fields' real defaults
        assert {f.name: f.default for f in dataclasses.fields(RunConfig)}[name] == default


# --- data drawn per seed -----------------------------------------------------------------------

def test_without_a_data_seed_the_draws_are_the_fixed_ones():
    n = 50
    assert torch.equal(fixed_subset_index(n, 20), torch.randperm(n, generator=torch.Generator().manual_seed(0))[:20].sort().values)
    x, y = torch.arange(n).float().unsqueeze(1), torch.arange(n)
    (kept, held) = split_off(x, y, 10)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    assert torch.equal(held[1], order[:10].sort().values)
    assert torch.equal(kept[1], order[10:].sort().values)


def test_a_data_seed_draws_its_own_subset_and_validation_rows():
    n = 1000
    subsets = {s: fixed_subset_index(n, 200, s) for s in range(4)}
    assert all(not torch.equal(subsets[a], subsets[b]) for a in subsets for b in subsets if a < b)
    assert torch.equal(subsets[2], fixed_subset_index(n, 200, 2))  # deterministic
    assert torch.equal(subsets[0], torch.randperm(n, generator=torch.Generator().manual_seed(
        draw_seed(0, "subset")))[:200].sort().values)
    x, y = torch.zeros(n, 1), torch.arange(n)
    held = {s: split_off(x, y, 100, data_seed=s)[1][1] for s in range(3)}
    assert all(not torch.equal(held[a], held[b]) for a in held for b in held if a < b)
    assert draw_seed(3, "subset") != draw_seed(3, "validation") != draw_seed(4, "validation")
    with pytest.raises(ValueError, match="unknown data draw"):
        draw_seed(0, "test")


def test_a_profile_that_redraws_the_data_gives_each_seed_its_own_draws():
    base = get_profile("demo")
    fair = Profile(name="demo", description="", datasets=base.datasets, seeds=(0, 1), settings=base.settings,
                   redraw_data=True)
    synthetic = fair.config("synthetic", "triplet", 3)
    assert synthetic.data_seed == 3 and synthetic.dataset_options["seed"] == 3
    fashion = fair.config("fashionmnist", "triplet", 4)
    assert fashion.data_seed == 4 and "seed" not in fashion.dataset_options
    assert fair.cell("synthetic", "triplet", 3)["dataset_options"]["seed"] == 3
    assert base.config("synthetic", "triplet", 3).data_seed is None
    assert base.config("synthetic", "triplet", 3).dataset_options.get("seed", 0) == 0
    # the group key separates seeds as before, and one seed's losses still fuse
    from vgcore.config import group_key

    assert group_key(synthetic) == group_key(fair.config("synthetic", "scl", 3))


def test_a_run_with_a_data_seed_trains_on_other_rows(tmp_path):
    kwargs = {"epochs": 1, "val_size": 48, "train_size": 100}
    runs = [train.run(SMOKE.config("synthetic", "triplet", 0, data_seed=d, **kwargs), tmp_path / str(d),
                      cache_dir=tmp_path / "cache", progress=False) for d in (0, 1)]
    val = [r.epochs[r.epochs["split"] == results.PROGRESS + "validation"]["recall@1"].to_numpy() for r in runs]
    assert not np.array_equal(val[0], val[1])


# --- validation: class-disjoint, and as the evaluation of a tuning trial ------------------------------

def test_a_class_disjoint_split_holds_out_every_4th_class_whole():
    y = torch.tensor([5, 1, 9, 3, 1, 7, 5, 11, 13, 15, 17, 19, 3, 21, 23])
    x = torch.arange(len(y)).float().unsqueeze(1)
    (kept, held) = split_off(x, y, 0, by_class=True)
    classes = sorted(set(y.tolist()))  # 1 3 5 7 9 11 13 15 17 19 21 23
    assert set(held[1].tolist()) == {classes[0], classes[4], classes[8]}  # 1, 9, 17
    assert set(held[1].tolist()).isdisjoint(kept[1].tolist())
    assert held[0].flatten().tolist() == [i for i, c in enumerate(y.tolist()) if c in (1, 9, 17)]  # every row, in order
    with pytest.raises(ValueError, match="whole classes"):
        split_off(x, y, 3, by_class=True)
    with pytest.raises(ValueError, match="at least 8"):
        split_off(x[:5], y[:5], 0, by_class=True)
    with pytest.raises(ValueError, match="val_size=0"):
        SMOKE.config("synthetic", "triplet", 0, val_split="classes", val_size=10)


def test_a_run_evaluated_on_validation_never_reads_the_test_split_and_runs_no_kmeans(tmp_path, monkeypatch):
    config = SMOKE.config("synthetic", "triplet", 0, epochs=2, val_split="classes", patience=1,
                          eval_split="validation", dataset_options={"n_fine_per_super": 8})  # 12 training classes
    real = train.loop.load_features

    def train_only(config, split, *args, **kwargs):
        assert split == "train", f"the {split} split was read"
        return real(config, split, *args, **kwargs)

    monkeypatch.setattr(train.loop, "load_features", train_only)
    res = train.run(config, tmp_path / "run", cache_dir=tmp_path / "cache", progress=False)
    assert set(res.epochs["split"]) == {"validation", "train_subset", results.PROGRESS + "validation",
                                        results.PROGRESS + "train_subset"}
    assert math.isnan(res.summary["final"]["nmi"]) and not math.isnan(res.summary["final"]["map@r"])
    # its validation rows are whole held-out classes, the ones the training never saw
    x, y = real(config, "train", cache_dir=tmp_path / "cache", progress=False)
    (_, y_kept), (_, y_held) = split_off(x, y, 0, by_class=True)
    embedded = np.load(res.path / "embeddings.npz")["y"]
    assert sorted(set(embedded.tolist())) == sorted(set(y_held.tolist()))
    assert set(embedded.tolist()).isdisjoint(y_kept.tolist())
    with pytest.raises(ValueError, match="held out"):
        SMOKE.config("synthetic", "triplet", 0, eval_split="validation")


def test_the_probes_table_has_a_row_per_run_and_reading(tmp_path):
    runs = [train.run(stopping_config(loss, epochs=4, probes=True), tmp_path / loss, cache_dir=tmp_path / "cache",
                      progress=False) for loss in ("triplet", "scl")]
    frame = results.runs_frame([r.path for r in runs], "probes")
    assert list(frame.columns) == [*results.RUN_ID_COLUMNS, "config_hash", *results.PROBE_COLUMNS]
    for res in runs:
        mine = frame[frame["loss"] == res.summary["config"]["loss"]]
        want = pd.DataFrame(res.summary["probes"]).rename(columns={"loss": "batch_loss"})
        pd.testing.assert_frame_equal(mine.drop(columns=[*results.RUN_ID_COLUMNS, "config_hash"]).reset_index(drop=True),
                                      want[list(results.PROBE_COLUMNS)])
    plain = train.run(stopping_config("triplet", epochs=2), tmp_path / "plain", cache_dir=tmp_path / "cache",
                      progress=False)
    assert results.runs_frame([plain.path], "probes").empty  # a run without probes has no reading
