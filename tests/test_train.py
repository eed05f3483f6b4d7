"""vgcore.train, config and results: smoke runs per loss, schema, determinism, failures, resume."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vgcore import results, train
from vgcore.config import PROFILES, RunConfig, get_profile, parse_overrides
from vgcore.data import DataNotFoundError
from vgcore.losses import LOSSES
from vgcore.train import learner

SMOKE = get_profile("smoke")
ROOT = Path(__file__).resolve().parents[1]


def smoke_config(loss="contrastive", seed=0, **overrides):
    return SMOKE.config("synthetic", loss, seed, **overrides)


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """One smoke run per loss, shared by the schema tests."""
    root = tmp_path_factory.mktemp("results")
    out = {}
    for loss in LOSSES:
        config = smoke_config(loss)
        out[loss] = train.run(config, results.run_dir(root, config), cache_dir=root / "cache", progress=False)
    return root, out


@pytest.mark.parametrize("loss", LOSSES)
def test_smoke_run_writes_the_full_schema(smoke_runs, loss):
    _, runs = smoke_runs
    result = runs[loss]
    files = sorted(p.name for p in result.path.iterdir())
    assert files == ["config.json", "embeddings.npz", "epochs.csv", "steps.csv", "summary.json"]
    record = results.load_run(result.path)
    assert tuple(record["steps"].columns) == results.STEP_COLUMNS
    assert tuple(record["epochs"].columns) == results.EPOCH_COLUMNS
    config = smoke_config(loss)
    n_batches = len(record["steps"]) // config.epochs
    assert n_batches >= 1 and len(record["steps"]) == n_batches * config.epochs
    assert record["steps"]["step"].tolist() == list(range(len(record["steps"])))
    # epoch 0 (untrained head) and every epoch, each for the eval split and the training subset
    assert sorted(set(record["epochs"]["epoch"])) == list(range(config.epochs + 1))
    assert set(record["epochs"]["split"]) == {"test", "train_subset"}
    assert np.isfinite(record["steps"]["train_loss"]).all()
    assert record["steps"]["active_ratio"].between(0, 1).all()
    assert (record["steps"]["grad_norm"] > 0).all()
    summary = record["summary"]
    assert summary["config_hash"] == config.config_hash()
    assert summary["schema_version"] == results.SCHEMA_VERSION
    assert summary["n_steps"] == len(record["steps"])
    assert record["steps"]["grad_effective_share"].between(0, 1).all()
    z, y = record["embeddings"]
    assert z.shape[1] == config.embedding_dim and len(z) == len(y)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=2e-3)  # float16 storage


def test_a_run_of_another_schema_version_is_stale(tmp_path, smoke_runs):
    _, runs = smoke_runs
    path = tmp_path / "run"
    shutil.copytree(runs["triplet"].path, path)
    config_hash = smoke_config("triplet").config_hash()
    assert results.is_complete(path, config_hash)
    summary = json.loads((path / "summary.json").read_text())
    del summary["schema_version"]  # as written before versions were recorded: version 1
    (path / "summary.json").write_text(json.dumps(summary))
    assert not results.is_complete(path, config_hash)  # a sweep reruns it
    assert results.is_complete(path)  # still readable


def test_proxy_losses_train_their_own_parameters(smoke_runs):
    _, runs = smoke_runs
    for loss in ("arcface", "ccl"):
        steps = runs[loss].steps
        assert (steps["loss_grad_norm"] > 0).any(), f"{loss}: its class weights/centers got no gradient"
    assert (runs["triplet"].steps["loss_grad_norm"] == 0).all()


def test_training_lowers_the_loss(smoke_runs):
    _, runs = smoke_runs
    for loss, result in runs.items():
        epochs = result.epochs[result.epochs["split"] == "test"]
        losses = result.steps.groupby("epoch")["train_loss"].mean()
        assert losses.iloc[-1] < losses.iloc[0], loss
        assert epochs["recall@1"].iloc[-1] > 0


def test_collect_returns_the_documented_columns(smoke_runs):
    root, _ = smoke_runs
    epochs = results.collect(root, "epochs")
    assert list(epochs.columns) == [*results.RUN_ID_COLUMNS, "config_hash", *results.EPOCH_COLUMNS]
    assert set(epochs["loss"]) == set(LOSSES)
    steps = results.collect(root, "steps")
    assert list(steps.columns) == [*results.RUN_ID_COLUMNS, "config_hash", *results.STEP_COLUMNS]
    summary = results.collect(root, "summary")
    assert len(summary) == len(LOSSES)
    for col in ("recall@1", "map@r", "intra_var", "loss_convergence_epoch", "active_ratio_mean", "wall_time_s"):
        assert col in summary.columns
    with pytest.raises(ValueError, match="epochs, steps, summary"):
        results.collect(root, "nope")


def test_collect_on_an_empty_root_has_the_columns(tmp_path):
    frame = results.collect(tmp_path, "steps")
    assert frame.empty and list(frame.columns)[-len(results.STEP_COLUMNS):] == list(results.STEP_COLUMNS)


def test_same_config_and_seed_give_identical_logs(tmp_path):
    config = smoke_config("triplet")
    a = train.run(config, tmp_path / "a", cache_dir=tmp_path / "cache", progress=False)
    b = train.run(config, tmp_path / "b", cache_dir=tmp_path / "cache", progress=False)
    for name in ("steps.csv", "epochs.csv"):
        assert (a.path / name).read_bytes() == (b.path / name).read_bytes(), name
    c = train.run(smoke_config("triplet", seed=1), tmp_path / "c", cache_dir=tmp_path / "cache", progress=False)
    assert (a.path / "steps.csv").read_bytes() != (c.path / "steps.csv").read_bytes()


def test_diagnostics_do_not_change_training(tmp_path):
    on = train.run(smoke_config("scl"), tmp_path / "on", cache_dir=tmp_path / "cache", progress=False)
    off = train.run(smoke_config("scl", diagnostics=False), tmp_path / "off", cache_dir=tmp_path / "cache",
                    progress=False)
    np.testing.assert_array_equal(on.steps["train_loss"], off.steps["train_loss"])
    assert off.steps["active_ratio"].isna().all()


def test_fixed_subset_is_the_same_for_every_seed_and_keeps_order():
    x, y = torch.arange(100.0).unsqueeze(1), torch.arange(100) % 7
    xa, ya = train.fixed_subset(x, y, 30)
    torch.manual_seed(123)
    xb, _ = train.fixed_subset(x, y, 30)
    assert torch.equal(xa, xb) and len(ya) == 30
    assert (xa[1:, 0] > xa[:-1, 0]).all() and torch.equal(ya, y[xa[:, 0].long()])
    assert train.fixed_subset(x, y, None)[0] is x
    with pytest.raises(ValueError, match="train_size"):
        RunConfig(train_size=1)


def test_pk_sampler_batches_have_p_classes_of_k():
    labels = torch.arange(12).repeat_interleave(5)
    config = RunConfig(sampler="pk", batch_size=16, samples_per_class=4)
    batches = list(train.batch_indices(labels, config, torch.Generator().manual_seed(0)))
    assert len(batches) == 60 // 16
    for idx in batches:
        classes, counts = labels[idx].unique(return_counts=True)
        assert len(classes) == 4 and (counts == 4).all()


def test_random_sampler_drops_the_incomplete_batch_and_repeats_nothing():
    labels = torch.arange(50) % 5
    config = RunConfig(batch_size=16)
    batches = torch.cat(list(train.batch_indices(labels, config, torch.Generator().manual_seed(0))))
    assert len(batches) == 48 and len(batches.unique()) == 48


@pytest.mark.parametrize("loss", ["triplet", "contrastive"])
def test_a_batch_without_positives_is_logged_not_fatal(tmp_path, loss):
    config = smoke_config(loss, sampler="pk", samples_per_class=1, batch_size=4)
    result = train.run(config, tmp_path / "r", cache_dir=tmp_path / "cache", progress=False)
    assert not result.steps["has_positives"].any()
    assert result.summary["batches_without_positives"] == result.summary["n_steps"]
    assert np.isfinite(result.steps["train_loss"]).all()
    if loss == "triplet":  # no positive, no triplet; contrastive still pushes negatives apart
        assert (result.steps["train_loss"] == 0).all() and (result.steps["n_terms"] == 0).all()


def test_nan_loss_stops_with_the_step_and_leaves_partial_logs(tmp_path, monkeypatch):
    real = learner.make_loss

    def poisoned(*args, **kwargs):
        loss = real(*args, **kwargs)
        calls = {"n": 0}
        forward = loss.forward

        def nan_at_step_3(z, y):
            out = forward(z, y)
            calls["n"] += 1
            if calls["n"] == 4:
                object.__setattr__(out, "loss", out.loss * float("nan"))
            return out

        loss.forward = nan_at_step_3
        return loss

    monkeypatch.setattr(learner, "make_loss", poisoned)
    config = smoke_config("infonce", sync_every=2)
    path = tmp_path / "run"
    with pytest.raises(train.TrainingDivergedError, match=r"at step 3 \(epoch 2\).*last finite values: train_loss="):
        train.run(config, path, cache_dir=tmp_path / "cache", progress=False)
    assert not results.is_complete(path)
    failure = json.loads((path / "failure.json").read_text())
    assert failure["step"] == 3
    steps = results.load_run(path)["steps"]
    assert steps["step"].tolist() == [0, 1, 2]


def test_missing_data_fails_before_any_work(tmp_path):
    config = RunConfig(profile="paper", dataset="cifar10", backbone="pixels", loss="triplet")
    with pytest.raises(DataNotFoundError, match="cifar10"):
        train.run(config, tmp_path / "run", data_root=tmp_path / "empty", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_config_rejects_unknown_keys_and_values():
    with pytest.raises(ValueError, match="valid keys: .*epochs"):
        RunConfig.from_dict({"epochz": 3})
    with pytest.raises(ValueError, match="choose one of: contrastive, triplet"):
        RunConfig(loss="hinge")
    with pytest.raises(ValueError, match="choose one of: .*fashionmnist"):
        RunConfig(dataset="mnist")
    with pytest.raises(ValueError, match="choose one of: smoke, demo, paper"):
        get_profile("huge")
    with pytest.raises(ValueError, match="positive integer"):
        RunConfig(epochs=0)
    with pytest.raises(ValueError, match="unknown hyperparameter.*margin"):
        RunConfig(loss="triplet", loss_params={"margn": 0.2})
    with pytest.raises(ValueError, match="dataset of profile 'smoke'"):
        SMOKE.config("cifar10", "triplet", 0)


def test_overrides_parse_json_values_and_dotted_dict_keys():
    assert parse_overrides(["epochs=3", "lr=1e-3", "sampler=pk", "loss_params.margin=0.2"]) == {
        "epochs": 3, "lr": 1e-3, "sampler": "pk", "loss_params": {"margin": 0.2}}
    demo = PROFILES["demo"].config("fashionmnist", "triplet", 0, **parse_overrides(["backbone_options.weights=random"]))
    assert demo.backbone_options == {**PROFILES["demo"].datasets["fashionmnist"]["backbone_options"], "weights": "random"}
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["epochs"])


def test_profiles_have_three_seeds_and_cover_every_loss():
    for name in ("demo", "paper"):
        profile = PROFILES[name]
        assert profile.seeds == (0, 1, 2) and profile.losses == LOSSES
    paper = PROFILES["paper"].config("cub200", "scl", 0)
    assert (paper.backbone, paper.epochs, paper.batch_size, paper.lr) == ("vit_b_32", 100, 512, 1e-4)


def test_cli_list_and_bad_input():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "vgcore", "list"], capture_output=True, text=True, env=env, check=True)
    assert "losses:    contrastive, triplet, npair, infonce, arcface, scl, ccl" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "vgcore", "run", "--profile", "smoke", "--dataset", "synthetic",
                          "--loss", "hinge"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "unknown loss 'hinge'" in bad.stderr and "Traceback" not in bad.stderr


def test_killed_sweep_resumes_without_redoing_finished_runs(tmp_path):
    """The sweep trains one fused group per (dataset, seed): kill it after the first group is written."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "vgcore", "sweep", "--profile", "smoke", "--seeds", "0", "1", "--results",
           str(tmp_path / "res"), "--cache-dir", str(tmp_path / "cache"), "--quiet", "epochs=4"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    root = tmp_path / "res" / "smoke" / "synthetic"
    deadline = time.time() + 120
    while len(list(root.glob("*/seed0/summary.json"))) < len(LOSSES) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p.parent: p.stat().st_mtime_ns for p in root.glob("*/seed*/summary.json")}
    assert len(LOSSES) <= len(finished) < 2 * len(LOSSES), "the sweep must be killed mid-way for this test to mean anything"
    before = {p: p.stat().st_mtime_ns for d in finished for p in d.iterdir()}

    subprocess.run(cmd, env=env, check=True, capture_output=True)
    after = {p: p.stat().st_mtime_ns for d in finished for p in d.iterdir()}
    assert after == before, "finished runs were rewritten"
    assert len(list(root.glob("*/seed*/summary.json"))) == 2 * len(LOSSES)
    leftovers = [p for p in root.rglob("*") if p.name.startswith(".tmp-") or p.name == "failure.json"]
    assert not leftovers
