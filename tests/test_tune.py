"""The tuning run of the fair comparison (vgcore.train.tune) at smoke scale, and the tuned profile."""

import dataclasses
import json

import numpy as np
import pytest

from vgcore import config as config_module
from vgcore import results, tuning
from vgcore.config import Profile, get_profile
from vgcore.train import loop, tune

SMOKE = get_profile("smoke")
LOSSES = ("triplet", "scl")


def small_profile(**changes) -> Profile:
    settings = {**SMOKE.settings, "epochs": 4, "val_size": 48, "patience": 2, "sampler": "pk", "samples_per_class": 8}
    return dataclasses.replace(SMOKE, losses=LOSSES, settings=settings, **changes)


@pytest.fixture(scope="module")
def tuned_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tuning")
    frame = tune.tune(small_profile(), root, seeds=(100,), cache_dir=root / "cache", progress=False)
    return root, frame


def test_every_trial_of_every_loss_is_trained_and_scored_at_its_best_checkpoint(tuned_root):
    root, frame = tuned_root
    assert len(frame) == len(LOSSES) * tuning.N_POINTS
    for _, row in frame.iterrows():
        config = tune.trial_configs(small_profile(), row["dataset"], row["loss"], row["seed"])[row["trial"]]
        assert (config.lr, config.loss_params[row["param"]]) == (row["lr"], row["value"])
        summary = results.read_summary(tune.trial_dir(root, config, row["trial"]))
        assert summary["config_hash"] == config.config_hash()
        assert row["map@r"] == summary["stopping"]["best_val_map@r"]
        # scored on validation only: the test split is never evaluated and no k-means runs
        assert summary["config"]["eval_split"] == "validation" and np.isnan(summary["final"]["nmi"])
        assert summary["config"]["diagnostics"] is False  # a trial is only scored
    # the same Sobol points for every loss: each loss's learning rates are the same list
    lrs = frame.groupby("loss")["lr"].apply(list)
    assert lrs["triplet"] == lrs["scl"]
    assert not (root / "smoke").exists()  # trials never land among the profile's own runs


def test_an_interrupted_tuning_resumes_without_retraining(tuned_root, monkeypatch):
    root, frame = tuned_root
    trained = []
    monkeypatch.setattr(tune, "run_group", lambda configs, *a, **k: trained.append(configs))
    again = tune.tune(small_profile(), root, seeds=(100,), cache_dir=root / "cache", progress=False)
    assert trained == []
    assert again.equals(frame)


def test_the_pick_is_the_best_mean_over_seeds_by_hand():
    rows = []
    for loss in LOSSES:
        for trial in range(tuning.N_POINTS):
            for seed, score in zip((100, 101), (0.1 * trial, 0.5 - 0.05 * trial), strict=True):
                rows.append({"dataset": "d", "loss": loss, "trial": trial, "seed": seed, "map@r": score,
                             "stopped_by": "budget" if trial == 7 else "patience"})
    import pandas as pd

    chosen = tune.picks(pd.DataFrame(rows))
    # mean = 0.25 + 0.025 trial: the last trial wins, and its two runs reached the budget
    for loss in LOSSES:
        entry = chosen["d"][loss]
        assert entry["trial"] == 7 and entry["unconverged"] == 2
        assert entry["val_map@r"] == pytest.approx(0.25 + 0.025 * 7)
        assert (entry["lr"], entry["loss_params"]) == (tuning.trials(loss)[7]["lr"], tuning.trials(loss)[7]["loss_params"])


def test_a_diverged_trial_scores_nan_and_loses(tuned_root, tmp_path, monkeypatch):
    root, _ = tuned_root
    real = loop.run_group

    def diverge_first(configs, dirs, **kwargs):
        real(configs[1:], dirs[1:], **kwargs)
        raise loop.TrainingDivergedError("trial 0 diverged", {dirs[0]: "diverged"})

    monkeypatch.setattr(tune, "run_group", diverge_first)
    frame = tune.tune(small_profile(), tmp_path, losses=("triplet",), seeds=(100,), cache_dir=root / "cache",
                      progress=False)
    assert np.isnan(frame.loc[frame["trial"] == 0, "map@r"]).all()
    assert tune.picks(frame)["synthetic"]["triplet"]["trial"] != 0


def test_a_profile_that_stops_on_nothing_cannot_be_tuned(tmp_path):
    with pytest.raises(ValueError, match="patience"):
        tune.tune(SMOKE, tmp_path, losses=("triplet",), seeds=(100,), progress=False)


def test_a_tuned_profile_reads_its_settings_and_only_those(tuned_root, tmp_path, monkeypatch):
    _, frame = tuned_root
    path = tmp_path / "smoke.json"
    monkeypatch.setattr(config_module, "tuned_path", lambda name: tmp_path / f"{name}.json")
    profile = small_profile(tuned=True)
    untuned = profile.config("synthetic", "triplet", 0)
    assert not profile.is_tuned("synthetic", "triplet")
    chosen = tune.picks(frame)
    assert tune.write_tuned(profile, chosen) == path
    stored = json.loads(path.read_text())
    assert stored["synthetic"]["scl"]["trial"] == chosen["synthetic"]["scl"]["trial"]
    tuned = profile.config("synthetic", "triplet", 0)
    assert profile.is_tuned("synthetic", "triplet")
    assert tuned.lr == chosen["synthetic"]["triplet"]["lr"]
    assert tuned.loss_params == chosen["synthetic"]["triplet"]["loss_params"]
    assert {k: v for k, v in tuned.to_dict().items() if k not in ("lr", "loss_params")} == {
        k: v for k, v in untuned.to_dict().items() if k not in ("lr", "loss_params")}
    assert profile.cell("synthetic", "scl", 1)["lr"] == chosen["synthetic"]["scl"]["lr"]
    # a registered profile's run with its tuned settings is its own run, not a variant
    fair = get_profile("fair")
    tune.write_tuned(fair, {"synthetic": {"triplet": chosen["synthetic"]["triplet"]}})
    own = fair.config("synthetic", "triplet", 0)
    assert own.lr == chosen["synthetic"]["triplet"]["lr"] and results.overrides_of(own) == {}


def test_the_fair_profile_follows_the_protocol_rules():
    from vgcore.train.samplers import pk_shape

    fair = get_profile("fair")
    assert fair.redraw_data and fair.tuned and fair.seeds == (0, 1, 2, 3, 4)
    assert "npair_groups" in fair.losses and set(fair.losses) <= set(tuning.SEARCH_SPACE)
    # FashionMNIST: 10 classes, 2,000 validation rows; synthetic: its 50 training classes less every 4th,
    # held out for validation because its test classes are unseen
    for dataset, n_classes, validation, budget in (("fashionmnist", 10, (2000, "rows"), 40),
                                                   ("synthetic", 37, (0, "classes"), 80)):
        c = fair.config(dataset, "triplet", 3)
        p, k = pk_shape(n_classes, 256)
        assert (c.sampler, c.batch_size, c.samples_per_class) == ("pk_distinct", p * k, k)  # rows distinct in a batch
        assert c.progress_evals  # the reporting runs read the convergence yardstick; the trials do not
        assert not any(t.progress_evals or t.diagnostics or t.probes for t in tune.trial_configs(fair, dataset, "triplet", 100))
        assert (c.patience, c.min_delta, c.epochs, c.data_seed) == (5, 0.001, budget, 3)
        assert (c.val_size, c.val_split) == validation


def test_the_sensitivity_build_trains_each_value_of_a_constant_as_its_own_variant_fused(tmp_path, monkeypatch):
    profile = small_profile()
    pairs = tune.sensitivity_configs(profile, losses=("triplet",), seeds=(0,))
    assert [t for t, _ in pairs] == [f"triplet-margin-k{k}" for k in range(5)]
    assert [c.loss_params["margin"] for _, c in pairs] == tuning.sensitivity_values("triplet")
    assert all(c.lr == profile.config("synthetic", "triplet", 0).lr for _, c in pairs)  # the tuned lr stays
    groups = []
    real = loop.run_group
    monkeypatch.setattr(loop, "run_group", lambda configs, *a, **k: groups.append(len(configs)) or real(configs, *a, **k))
    done = tune.sensitivity(profile, tmp_path, losses=("triplet",), seeds=(0,), cache_dir=tmp_path / "c",
                            progress=False)
    assert groups == [5] and not done.failures  # the five values of one dataset x seed train in one group
    for (tag, config), path in zip(pairs, done.paths, strict=True):
        assert path.parts[-5:-3] == ("variants", tag)
        assert results.is_current(path, config.config_hash())
    again = tune.sensitivity(profile, tmp_path, losses=("triplet",), seeds=(0,), cache_dir=tmp_path / "c",
                             progress=False)
    assert groups == [5] and again.paths == done.paths  # nothing retrained
    with pytest.raises(ValueError, match="one tag, or one per config"):
        loop.sweep([c for _, c in pairs], tmp_path, tag=["a", "b"])


def test_a_value_is_at_the_edge_within_five_percent_of_its_axis_on_its_scale():
    from vgcore.tuning import EDGE, LR_AXIS, SEARCH_SPACE, at_edge

    for axis in (LR_AXIS, *SEARCH_SPACE.values()):
        for u in (0.0, 0.04, 0.3, 0.5, 0.96, 1.0):
            assert abs(axis.position(axis.value(u)) - u) < 1e-12
    margin = SEARCH_SPACE["triplet"]  # uniform [0.02, 0.5]
    lr_mid = LR_AXIS.value(0.5)
    assert at_edge("triplet", {"lr": lr_mid, "loss_params": {"margin": 0.02 + 0.049 * 0.48}}) == ["margin"]
    assert at_edge("triplet", {"lr": lr_mid, "loss_params": {"margin": 0.02 + 0.051 * 0.48}}) == []
    assert at_edge("triplet", {"lr": LR_AXIS.value(1 - EDGE / 2), "loss_params": {"margin": 0.3}}) == ["lr"]
    assert margin.position(0.5) == 1.0


def test_a_trial_of_a_changed_profile_is_retrained_and_the_old_one_kept_aside(tuned_root, tmp_path):
    import shutil

    root, _ = tuned_root
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    longer = dataclasses.replace(small_profile(), settings={**small_profile().settings, "epochs": 5})
    frame = tune.tune(longer, copy, losses=("triplet",), seeds=(100,), cache_dir=root / "cache", progress=False)
    assert frame["map@r"].notna().all()  # every trial retrained under the new budget and scored
    for k, config in enumerate(tune.trial_configs(longer, "synthetic", "triplet", 100)):
        path = tune.trial_dir(copy, config, k)
        assert results.read_summary(path)["config"]["epochs"] == 5
        old = tune.trial_dir(root, tune.trial_configs(small_profile(), "synthetic", "triplet", 100)[k], k)
        kept = path.with_name(f"{path.name}.stale-{results.read_summary(old)['config_hash'][:12]}")
        assert results.read_summary(kept)["config_hash"] == results.read_summary(old)["config_hash"]
