"""vgcore.train, config and results: smoke runs per loss, schema, determinism, failures, resume."""

import copy
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from _faults import nan_loss_at_call

from vgcore import results, train
from vgcore.config import PROFILES, RunConfig, get_profile, parse_overrides
from vgcore.data import DataNotFoundError
from vgcore.losses import LOSSES
from vgcore.metrics.convergence import progress_grid
from vgcore.metrics.greediness import GRAD_THRESHOLD
from vgcore.train import graph

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
    assert set(record["epochs"]["split"]) == {"test", "train_subset", "progress/test", "progress/train_subset"}
    # the progress splits (eval split when there is no validation split) at the log-spaced steps
    progress = record["epochs"][record["epochs"]["split"] == "progress/test"]
    n = len(record["steps"])
    assert progress["step"].tolist() == progress_grid(n, config.progress_ratio, config.early_step)
    epoch_rows = record["epochs"][record["epochs"]["split"] == "test"]
    assert epoch_rows["step"].tolist() == [e * n_batches for e in epoch_rows["epoch"]]
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


@pytest.mark.parametrize("n_classes", [2, 3, 10, 50, 63, 64, 100, 200])
def test_pk_shape_is_the_fair_rule_and_its_batches_hold_even_k_of_p_classes(n_classes):
    """PROTOCOL, "Fair comparison: Batches": P = min(C, B/4), K = 2 floor(B/2P), P K <= B; enumerated by hand."""
    p, k = train.pk_shape(n_classes, 256)
    want_p = min(n_classes, 64)
    want_k = max(k2 for k2 in range(2, 257, 2) if want_p * k2 <= 256)  # the largest even K that fits
    assert (p, k) == (want_p, want_k) and k % 2 == 0 and k >= 4
    labels = torch.arange(n_classes).repeat_interleave(256 // n_classes + 1)  # one batch's worth at least
    config = RunConfig(sampler="pk", batch_size=p * k, samples_per_class=k)
    (idx, *_) = train.batch_indices(labels, config, torch.Generator().manual_seed(0))
    classes, counts = labels[idx].unique(return_counts=True)
    assert len(classes) == p and (counts == k).all()


def test_pk_shape_names_what_cannot_make_a_batch():
    assert train.pk_shape(10) == (10, 24) and train.pk_shape(64) == (64, 4)  # PROTOCOL's two examples
    with pytest.raises(ValueError, match="at least 2 classes"):
        train.pk_shape(1)
    with pytest.raises(ValueError, match="raise batch_size"):
        train.pk_shape(10, batch_size=6)


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
    nan_loss_at_call(monkeypatch, "infonce", call=4)  # its 4th forward: training step 3
    config = smoke_config("infonce", sync_every=2)
    path = tmp_path / "run"
    with pytest.raises(train.TrainingDivergedError, match=r"at step 3 \(epoch 2\).*last finite values: train_loss="):
        train.run(config, path, cache_dir=tmp_path / "cache", progress=False)
    assert not results.is_complete(path)
    failure = json.loads((path / "failure.json").read_text())
    assert failure["step"] == 3
    steps = results.load_run(path)["steps"]
    assert steps["step"].tolist() == [0, 1, 2]


def test_an_overflowing_head_stops_at_the_step_where_it_starts(tmp_path):
    """Issue 18.5: with lr=1e30 the head's outputs overflow, normalising turns every embedding into
    zeros and the loss stays finite; the run used to die in evaluation ("all singular values are
    zero") with no step named, no failure.json and no steps.csv."""
    path = tmp_path / "run"
    with pytest.raises(train.TrainingDivergedError, match=r"diverged at step 1 \(epoch 1\): the head's outputs left "
                       r"the unit sphere.*last finite values: train_loss=") as err:
        train.run(smoke_config("triplet", lr=1e30), path, cache_dir=tmp_path / "cache", progress=False)
    assert str(path) in str(err.value)
    failure = json.loads((path / "failure.json").read_text())
    assert (failure["step"], failure["epoch"]) == (1, 1) and "unit sphere" in failure["what"]
    assert results.load_run(path)["steps"]["step"].tolist() == [0]  # the last good step is kept
    assert not results.is_complete(path)


def test_a_batch_size_that_can_hold_no_positive_pair_is_warned_about(tmp_path):
    """Issue 18.8: batch_size=1 gave a "complete" run that never trained, without a word."""
    with pytest.warns(train.NoPositivePairsWarning, match="no batch can hold a positive pair"):
        result = train.run(smoke_config("triplet", batch_size=1, epochs=1), tmp_path / "r",
                           cache_dir=tmp_path / "cache", progress=False)
    assert result.summary["batches_without_positives"] == result.summary["n_steps"]


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


def test_profiles_have_their_seeds_and_cover_every_loss():
    from vgcore.registry import VARIANTS

    for name, seeds in (("paper_schedule", (0, 1, 2, 3, 4)), ("paper", (0, 1, 2))):
        profile = PROFILES[name]
        assert profile.seeds == seeds and profile.losses == LOSSES
    demo = PROFILES["demo"]
    # the demo's committed build runs the seven and these four variants; a variant added later
    # (npair_groups) is registered without changing it
    demo_variants = ("npair_all", "triplet_semihard", "triplet_facenet", "ccl_ema")
    assert demo.seeds == (0, 1, 2, 3, 4) and demo.losses == (*LOSSES, *demo_variants)
    assert set(demo_variants) < set(VARIANTS) and "npair_groups" in VARIANTS
    schedule = PROFILES["paper_schedule"].config("fashionmnist", "triplet", 0)
    assert (schedule.epochs, schedule.batch_size, schedule.lr) == (100, 512, 1e-4)
    paper = PROFILES["paper"].config("cub200", "scl", 0)
    assert (paper.backbone, paper.epochs, paper.batch_size, paper.lr) == ("vit_b_32", 100, 512, 1e-4)


def test_cli_list_and_bad_input():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "vgcore", "list"], capture_output=True, text=True, env=env, check=True)
    assert "losses:    contrastive, triplet, npair, infonce, arcface, scl, ccl" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "vgcore", "run", "--profile", "smoke", "--dataset", "synthetic",
                          "--loss", "hinge"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "unknown loss 'hinge'" in bad.stderr and "Traceback" not in bad.stderr


# The sweep of the test below, killed (SIGKILL, no clean-up) at a known point: in its second fused
# group (seed 1), when the third run has written its tables but not its embeddings or summary.
KILLED_SWEEP = """
import os, signal, sys
from vgcore import results
from vgcore.__main__ import main
from vgcore.config import get_profile
real, calls = results.write_embeddings, []
def write_embeddings(*args, **kwargs):
    calls.append(args)
    if len(calls) == len(get_profile("smoke").losses) + 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
results.write_embeddings = write_embeddings
sys.exit(main(sys.argv[1:]))
"""


def test_killed_sweep_resumes_without_redoing_finished_runs(tmp_path):
    """The sweep trains one fused group per (dataset, seed): kill it after the first group is written."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["sweep", "--profile", "smoke", "--seeds", "0", "1", "--results", str(tmp_path / "res"),
            "--cache-dir", str(tmp_path / "cache"), "--quiet", "--set", "epochs=2"]
    killed = subprocess.run([sys.executable, "-c", KILLED_SWEEP, *args], env=env, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    root = results.run_dir(tmp_path / "res", smoke_config(epochs=2)).parents[1]  # epochs=2: a variant's folder
    first, second, third = LOSSES[:3]
    finished = {p.parent: p.stat().st_mtime_ns for p in root.glob("*/seed*/summary.json")}
    assert set(finished) == {root / loss / "seed0" for loss in LOSSES} | {root / first / "seed1", root / second / "seed1"}
    assert list((root / third).glob(".tmp-seed1*"))  # killed mid-run: its staging folder, no summary
    before = {p: p.stat().st_mtime_ns for d in finished for p in d.iterdir()}

    subprocess.run([sys.executable, "-m", "vgcore", *args], env=env, check=True, capture_output=True)
    after = {p: p.stat().st_mtime_ns for d in finished for p in d.iterdir()}
    assert after == before, "finished runs were rewritten"
    assert len(list(root.glob("*/seed*/summary.json"))) == 2 * len(LOSSES)
    assert results.is_complete(root / third / "seed1", smoke_config(third, seed=1, epochs=2).config_hash())
    leftovers = [p for p in root.rglob("*") if p.name.startswith(".tmp-") or p.name == "failure.json"]
    assert not leftovers


def test_runs_record_step_convergence_compaction_the_untrained_head_and_superclass_structure(smoke_runs):
    _, runs = smoke_runs
    summary = runs["scl"].summary
    assert 0 <= summary["convergence"]["loss_convergence_step"] < summary["n_steps"]
    assert "compaction_epoch1" in summary["convergence"]
    epochs = runs["scl"].epochs
    assert 1 in set(epochs["epoch"])  # epoch 1 is always evaluated
    test0 = epochs[(epochs["split"] == "test") & (epochs["epoch"] == 0)].iloc[0]
    assert summary["untrained"]["untrained_recall@1"] == test0["recall@1"]
    final = epochs[(epochs["split"] == "test")].iloc[-1]
    assert 0 <= final["fine_recall@1_within_super"] <= 1 and 0 <= final["superclass_recall@1"] <= 1


def test_each_run_starts_from_the_head_its_seed_draws(tmp_path, monkeypatch):
    """Every head is drawn from a generator reseeded with its run's seed, alone and in a fused group:
    without the reseed all seeds start from one head and the spread over seeds is batch order alone."""
    initial = []  # (seed, head weights as built) of every learner the loop builds
    real = train.loop.make_learner

    def spy(config, *args, **kwargs):
        learner = real(config, *args, **kwargs)
        initial.append((config.seed, {k: v.clone() for k, v in learner.head.state_dict().items()}))
        return learner

    monkeypatch.setattr(train.loop, "make_learner", spy)
    untrained = {}  # seed -> intra_var of the untrained heads on the test split (its data is the same for all seeds)
    for seed in (0, 1):
        configs = [smoke_config(loss, seed=seed, epochs=1) for loss in ("triplet", "scl")]
        alone = train.run(configs[0], tmp_path / f"alone{seed}", cache_dir=tmp_path / "cache", progress=False)
        fused = train.run_group(configs, [tmp_path / f"fused{seed}" / c.loss for c in configs],
                                cache_dir=tmp_path / "cache", progress=False)
        untrained[seed] = [r.epochs.query("epoch == 0 and split == 'test'")["intra_var"].item()
                           for r in (alone, *fused)]
    assert [seed for seed, _ in initial] == [0, 0, 0, 1, 1, 1]
    for seed, weights in initial:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            drawn = torch.nn.Linear(*reversed(weights["net.weight"].shape))  # a linear head: in -> out
        assert weights.keys() == {"net.weight", "net.bias"}
        assert torch.equal(weights["net.weight"], drawn.weight) and torch.equal(weights["net.bias"], drawn.bias), seed
    assert all(a != b for a, b in zip(untrained[0], untrained[1], strict=True)), untrained


def _greediness_by_hand(norms: np.ndarray) -> dict[str, float]:
    """PROTOCOL.md's per-sample GREEDINESS measures of one batch from its per-sample gradient norms."""
    b = len(norms)
    active = norms[norms * b > GRAD_THRESHOLD]
    return {"grad_active_ratio": len(active) / b, "grad_effective_share": norms.sum() ** 2 / (b * (norms**2).sum()),
            "emb_grad_norm_mean": active.mean(), "emb_grad_norm_p50": np.median(active),
            "emb_grad_norm_p90": np.quantile(active, 0.9)}


def test_logged_greediness_is_of_the_embedding_gradient_tangent_to_the_sphere(tmp_path, monkeypatch):
    """steps.csv's per-sample gradient measures are of g - (g.z) z, recomputed here with autograd on
    each step's batch, head and loss; contrastive's raw dL/dz has a radial part, so they differ from the raw."""
    before = []  # each step's (head, loss, x, y), copied before its update
    real = graph.train_step

    def spy(learners, x, y, **kwargs):
        before.extend((copy.deepcopy(lrn.head), copy.deepcopy(lrn.loss_fn), x, y) for lrn in learners)
        return real(learners, x, y, **kwargs)

    monkeypatch.setattr(graph, "train_step", spy)
    steps = train.run(smoke_config("contrastive", epochs=1), tmp_path / "r", cache_dir=tmp_path / "cache",
                      progress=False).steps
    assert len(before) == len(steps) > 0
    for (head, loss_fn, x, y), (_, row) in zip(before, steps.iterrows(), strict=True):
        z = head(x).detach().requires_grad_()
        (g,) = torch.autograd.grad(loss_fn(z, y), z)
        u = z.detach()
        tangential = _greediness_by_hand((g - (g * u).sum(dim=1, keepdim=True) * u).double().norm(dim=1).numpy())
        raw = _greediness_by_hand(g.double().norm(dim=1).numpy())
        logged = row[list(tangential)].to_numpy(float)
        np.testing.assert_allclose(logged, list(tangential.values()), rtol=1e-5, err_msg=f"step {row['step']}")
        assert not np.allclose(logged, list(raw.values()), rtol=1e-3)


def test_the_final_epoch_is_evaluated_when_eval_every_skips_it(tmp_path):
    """epochs=5, eval_every=3: the untrained head, epoch 1 (always), 3 and the final 5 are evaluated,
    and the summary's final metrics (the tables' numbers) are epoch 5's, with its full evaluation."""
    result = train.run(smoke_config("triplet", epochs=5, eval_every=3), tmp_path / "r", cache_dir=tmp_path / "cache",
                       progress=False)
    written = pd.read_csv(result.path / "epochs.csv")
    assert sorted(set(written.loc[written["split"] == "test", "epoch"])) == [0, 1, 3, 5]
    last = written.query("epoch == 5 and split == 'test'").drop(columns=["epoch", "step", "split"]).iloc[0]
    final = json.loads((result.path / "summary.json").read_text())["final"]
    assert sorted(final) == sorted(last.index)
    for key, value in final.items():
        assert value == pytest.approx(last[key], rel=1e-12, nan_ok=True), key
    assert np.isfinite(final["map@r"])  # MAP@R is computed at the final epoch only


def test_summary_greediness_means_are_the_means_over_steps_csv(smoke_runs):
    """summary.json's greediness_mean (the tables' per-run GREEDINESS) holds each steps.csv column's
    mean over the steps that have a reading, not another average: the gradient norms' mean and median
    differ here."""
    _, runs = smoke_runs
    columns = [c for c in results.STEP_COLUMNS if c not in ("step", "epoch", "train_loss")]
    for loss, result in runs.items():
        steps = pd.read_csv(result.path / "steps.csv")
        means = json.loads((result.path / "summary.json").read_text())["greediness_mean"]
        assert sorted(means) == sorted(f"{c}_mean" for c in columns)
        for c in columns:
            values = steps[c].to_numpy(float)
            values = values[~np.isnan(values)]  # a step with no reading (Adam's first step's share) is skipped
            assert means[f"{c}_mean"] == pytest.approx(math.fsum(values) / len(values), rel=1e-9), (loss, c)
        assert math.isnan(steps["adam_step_norm_mean"].iloc[0]) and steps["adam_step_norm_mean"].iloc[1:].notna().all()
        assert steps["grad_norm"].mean() != pytest.approx(steps["grad_norm"].median(), rel=1e-6), loss


def test_a_sweep_stops_on_a_reused_tag_before_training(tmp_path):
    """The tag's variant.json records other settings for this dataset: nothing is trained or written."""
    root = tmp_path / "results"
    folder = root / "smoke" / "variants" / "short"
    folder.mkdir(parents=True)
    record = {"profile": "smoke", "name": "short", "tag": "short", "overrides": {"synthetic": {"epochs": 1}}}
    (folder / "variant.json").write_text(json.dumps(record))
    with pytest.raises(results.VariantConflictError, match="differing keys: epochs"):
        train.sweep([smoke_config(epochs=2)], root, tag="short", cache_dir=tmp_path / "cache", progress=False)
    assert [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()] == \
        ["smoke/variants/short/variant.json"]


def test_a_steps_loss_grad_norm_is_the_norm_of_the_loss_parameters_gradient():
    """ArcFace learns its class weights: their gradient is recorded beside the head's."""
    from vgcore.train.learner import STAT_KEYS, make_learner, train_step

    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 6, generator=gen), torch.arange(16) % 4
    learner = make_learner(smoke_config("arcface"), 6, 4, torch.device("cpu"))
    row = train_step([learner], x, y)[0]
    want = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in learner.loss_fn.parameters()))
    assert want > 0 and float(row[STAT_KEYS.index("loss_grad_norm")]) == pytest.approx(want, rel=1e-5)


def test_pk_distinct_batches_hold_k_distinct_rows_of_each_of_p_classes():
    """PML's MPerClassSampler draws a class's m rows without replacement: so does `pk_distinct` (a
    row twice in a batch is a positive pair at distance 0). Classes of unequal size; checked by hand."""
    sizes = [7, 5, 9, 6, 5, 8]
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])[torch.randperm(40, generator=torch.Generator().manual_seed(1))]
    config = RunConfig(sampler="pk_distinct", batch_size=15, samples_per_class=5)
    seen = torch.zeros(40, dtype=torch.long)
    for epoch in range(30):
        batches = list(train.batch_indices(labels, config, torch.Generator().manual_seed(epoch)))
        assert len(batches) == 40 // 15
        for idx in batches:
            assert idx.unique().numel() == idx.numel() == 15  # no row twice
            classes, counts = labels[idx].unique(return_counts=True)
            assert len(classes) == 3 and (counts == 5).all()
            seen[idx] += 1
    assert (seen > 0).all()  # every row of every class is drawn at some point
    again = list(train.batch_indices(labels, config, torch.Generator().manual_seed(3)))
    assert all(torch.equal(a, b) for a, b in zip(again, train.batch_indices(labels, config, torch.Generator().manual_seed(3)), strict=True))


def test_pk_sampler_with_replacement_repeats_rows_and_pk_distinct_never_does():
    labels = torch.arange(4).repeat_interleave(6)
    drawn = {s: torch.cat(list(train.batch_indices(labels, RunConfig(sampler=s, batch_size=12, samples_per_class=6),
                                                   torch.Generator().manual_seed(0)))) for s in ("pk", "pk_distinct")}
    assert drawn["pk"].view(-1, 6).sort(dim=1).values.diff(dim=1).eq(0).any()  # a class's 6 of 6 with replacement
    assert (drawn["pk_distinct"].view(-1, 6).sort(dim=1).values.diff(dim=1) > 0).all()


def test_pk_distinct_refuses_a_class_smaller_than_k_naming_it():
    labels = torch.tensor([0] * 6 + [1] * 3 + [2] * 6)
    config = RunConfig(sampler="pk_distinct", batch_size=8, samples_per_class=4)
    with pytest.raises(ValueError, match=r"class 1 has 3 rows.*samples_per_class"):
        train.check_sampler(labels, config)
    with pytest.raises(ValueError, match="divisible"):
        RunConfig(sampler="pk_distinct", batch_size=10, samples_per_class=4)


def test_without_progress_evals_training_is_the_same_and_no_progress_row_is_written(tmp_path):
    """A tuning trial skips the log-spaced progress evaluations: the steps and the evaluated epochs
    are those of the run with them; only the ``progress_`` rows (and the key read from them) go."""
    on = train.run(smoke_config("triplet", val_size=40, patience=2), tmp_path / "on", cache_dir=tmp_path / "cache",
                   progress=False)
    off = train.run(smoke_config("triplet", val_size=40, patience=2, progress_evals=False), tmp_path / "off",
                    cache_dir=tmp_path / "cache", progress=False)
    np.testing.assert_array_equal(on.steps["train_loss"], off.steps["train_loss"])
    kept = on.epochs[~on.epochs["split"].str.startswith(results.PROGRESS)].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, off.epochs.reset_index(drop=True))
    assert on.epochs["split"].str.startswith(results.PROGRESS).any()
    assert off.summary["stopping"] == on.summary["stopping"]
    assert math.isnan(off.summary["convergence"]["val_convergence_step"])
    assert "progress_evals" not in on.summary["config"] and off.summary["config"]["progress_evals"] is False
