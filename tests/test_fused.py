"""Several learners on one batch stream: a fused group of runs equals each run trained alone.

`vgcore.train.run_group` trains every loss of a (dataset, seed) in one process on the same batches;
`vgcore.train.run` is that loop with one learner. Fusing is a pure speed change: each run's
steps.csv and epochs.csv must be the ones it gets alone (bit for bit on the CPU).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from _faults import nan_loss_at_call

from vgcore import results, train
from vgcore.config import get_profile
from vgcore.losses import LOSSES
from vgcore.registry import BASELINES

SMOKE = get_profile("smoke")


def smoke(loss, **overrides):
    return SMOKE.config("synthetic", loss, 0, **overrides)


def alone_and_fused(tmp_path, configs):
    cache = tmp_path / "cache"
    alone = [train.run(c, tmp_path / "alone" / f"{i}", cache_dir=cache, progress=False) for i, c in enumerate(configs)]
    fused = train.run_group(configs, [tmp_path / "fused" / f"{i}" for i in range(len(configs))], cache_dir=cache,
                            progress=False)
    return alone, fused


def test_every_loss_fused_equals_its_run_alone_bit_for_bit(tmp_path):
    configs = [smoke(loss) for loss in LOSSES]
    alone, fused = alone_and_fused(tmp_path, configs)
    for a, f, config in zip(alone, fused, configs, strict=True):
        for name in ("steps.csv", "epochs.csv"):
            assert (a.path / name).read_bytes() == (f.path / name).read_bytes(), f"{config.loss}: {name} differs"
        with np.load(a.path / "embeddings.npz") as za, np.load(f.path / "embeddings.npz") as zf:
            assert np.array_equal(za["z"], zf["z"])
        assert pd.Series(a.summary["final"]).equals(pd.Series(f.summary["final"]))  # NaN where both are
        assert a.summary["config_hash"] == f.summary["config_hash"] == config.config_hash()
        assert f.summary["group_size"] == len(LOSSES) and a.summary["group_size"] == 1
    # the runs really differ from each other (each learner is its own)
    assert len({(f.path / "steps.csv").read_bytes() for f in fused}) == len(LOSSES)


def test_variants_of_one_loss_and_the_pk_sampler_fuse_too(tmp_path):
    """Learners may differ in loss hyperparameters, lr and head; they share the batch stream."""
    configs = [smoke("triplet", sampler="pk", samples_per_class=8, epochs=2),
               smoke("triplet", sampler="pk", samples_per_class=8, epochs=2, loss_params={"margin": 0.5}),
               smoke("scl", sampler="pk", samples_per_class=8, epochs=2, lr=3e-3, head="mlp")]
    alone, fused = alone_and_fused(tmp_path, configs)
    for a, f in zip(alone, fused, strict=True):
        pd.testing.assert_frame_equal(a.steps, f.steps)
        pd.testing.assert_frame_equal(a.epochs, f.epochs)
    assert not alone[0].steps["train_loss"].equals(alone[1].steps["train_loss"])


def test_the_baseline_fuses_with_the_losses_it_is_compared_with(tmp_path):
    """The fair comparison's baseline (Multi-Similarity) trains in a group with paper losses on the
    P x K stream, each run as it is alone, bit for bit."""
    configs = [smoke(loss, sampler="pk", samples_per_class=8, epochs=2) for loss in (*BASELINES, "scl", "npair")]
    alone, fused = alone_and_fused(tmp_path, configs)
    for a, f, config in zip(alone, fused, configs, strict=True):
        for name in ("steps.csv", "epochs.csv"):
            assert (a.path / name).read_bytes() == (f.path / name).read_bytes(), f"{config.loss}: {name} differs"
    assert fused[0].summary["group_size"] == len(configs)
    assert fused[0].steps["train_loss"].gt(0).all() and not fused[0].steps["train_loss"].equals(fused[1].steps["train_loss"])


def test_configs_that_do_not_share_a_batch_stream_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"differ in seed \(0 vs 1\).*run them in separate groups"):
        train.run_group([smoke("triplet"), SMOKE.config("synthetic", "scl", 1)], [tmp_path / "a", tmp_path / "b"],
                        cache_dir=tmp_path / "cache", progress=False)
    with pytest.raises(ValueError, match="one output directory per config"):
        train.run_group([smoke("triplet")], [], progress=False)
    with pytest.raises(ValueError, match="the same output directory"):
        train.run_group([smoke("triplet"), smoke("scl")], [tmp_path / "x", tmp_path / "x"], progress=False)
    assert not (tmp_path / "a").exists()


@pytest.fixture(scope="module")
def diverged_group(tmp_path_factory):
    """triplet, infonce and scl fused, infonce's loss NaN at its 4th forward (training step 3, in epoch 2
    of 3): the configs, the run directories and the error the group raised."""
    root = tmp_path_factory.mktemp("diverged")
    configs = [smoke(loss, sync_every=2) for loss in ("triplet", "infonce", "scl")]
    paths = [root / c.loss for c in configs]
    with pytest.MonkeyPatch.context() as monkeypatch, pytest.raises(train.TrainingDivergedError) as err:
        nan_loss_at_call(monkeypatch, "infonce", call=4)
        train.run_group(configs, paths, cache_dir=root / "cache", progress=False)
    return configs, paths, err.value


def test_a_diverging_learner_fails_alone_and_its_group_finishes(diverged_group):
    """One learner's NaN loss writes its failure record; the others complete, then the group raises."""
    configs, paths, err = diverged_group
    assert re.search(r"'infonce' on 'synthetic' \(seed 0\) diverged at step 3 \(epoch 2\)", str(err))
    assert results.is_complete(paths[0], configs[0].config_hash())
    assert results.is_complete(paths[2], configs[2].config_hash())
    assert not results.is_complete(paths[1])
    assert json.loads((paths[1] / "failure.json").read_text())["step"] == 3
    assert results.load_run(paths[1])["steps"]["step"].tolist() == [0, 1, 2]


def test_after_a_learner_leaves_the_group_each_survivor_keeps_its_own_steps_and_evaluations(diverged_group):
    """Once the middle learner has left (epochs 2 and 3), each survivor's steps.csv, epochs.csv and final
    metrics are still those of its run alone: no evaluation is written to another run."""
    configs, paths, _ = diverged_group
    for config, path in zip(configs[::2], paths[::2], strict=True):
        alone = train.run(config, path.parent / "alone" / config.loss, cache_dir=path.parent / "cache",
                          progress=False)
        for name in ("steps.csv", "epochs.csv"):
            assert (alone.path / name).read_bytes() == (path / name).read_bytes(), f"{config.loss}: {name} differs"
        finals = [pd.Series(results.load_run(p)["summary"]["final"]) for p in (alone.path, path)]
        assert finals[0].equals(finals[1]), config.loss  # NaN where both are


def test_sweep_fuses_each_dataset_and_seed_and_skips_complete_runs(tmp_path):
    configs = [SMOKE.config("synthetic", loss, seed, epochs=1) for loss in ("triplet", "scl") for seed in (0, 1)]
    root = tmp_path / "res"
    calls = []
    real = train.loop.run_group

    def spy(group, *args, **kwargs):
        calls.append(sorted((c.loss, c.seed) for c in group))
        return real(group, *args, **kwargs)

    train.loop.run_group, saved = spy, train.loop.run_group
    try:
        train.sweep(configs, root, cache_dir=tmp_path / "cache", progress=False)
        assert sorted(calls) == [[("scl", 0), ("triplet", 0)], [("scl", 1), ("triplet", 1)]]
        calls.clear()
        (results.run_dir(root, configs[0]) / "summary.json").unlink()  # triplet seed 0 incomplete
        train.sweep(configs, root, cache_dir=tmp_path / "cache", progress=False)
        assert calls == [[("triplet", 0)]]
    finally:
        train.loop.run_group = saved


def test_map_at_r_and_nmi_only_where_reported_and_the_curves_every_epoch(tmp_path):
    """Per epoch: VARIANCE and Recall@K (the curves). MAP@R, R-precision and NMI: the final epoch
    (default) or every `full_eval_every` epochs; a schedule changes no value it computes."""
    final_only = train.run(smoke("triplet"), tmp_path / "a", cache_dir=tmp_path / "cache", progress=False)
    every_2 = train.run(smoke("triplet", full_eval_every=2), tmp_path / "b", cache_dir=tmp_path / "cache",
                        progress=False)
    for result, full_epochs in ((final_only, [3]), (every_2, [0, 2, 3])):
        e = result.epochs
        e = e[~e["split"].str.startswith("progress/")]  # the progress steps read Recall@1 and intra_var only
        assert sorted(e["epoch"].unique()) == [0, 1, 2, 3]
        assert e[["recall@1", "recall@8", "intra_var", "inter_var"]].notna().all().all()
        for col in ("map@r", "r_precision", "nmi"):
            assert sorted(e.loc[e[col].notna(), "epoch"].unique()) == full_epochs, col
        assert np.isfinite([result.summary["final"][k] for k in ("map@r", "r_precision", "nmi")]).all()
    a, b = final_only.epochs, every_2.epochs
    pd.testing.assert_frame_equal(a.drop(columns=["map@r", "r_precision", "nmi"]),
                                  b.drop(columns=["map@r", "r_precision", "nmi"]))
    assert pd.Series(final_only.summary["final"]).equals(pd.Series(every_2.summary["final"]))
    with pytest.raises(ValueError, match="full_eval_every must be 0"):
        smoke("triplet", full_eval_every=-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_cuda_graph_step_equals_the_eager_step_on_the_gpu(tmp_path):
    """The captured multi-learner step (heads, losses, diagnostics, Adam) replays the eager step."""
    configs = [smoke(loss, device="cuda", epochs=4) for loss in (*LOSSES, *BASELINES)]
    eager = train.run_group(configs, [tmp_path / "eager" / c.loss for c in configs], cache_dir=tmp_path / "cache",
                            progress=False, cuda_graph=False)
    graph = train.run_group(configs, [tmp_path / "graph" / c.loss for c in configs], cache_dir=tmp_path / "cache",
                            progress=False, cuda_graph=True)
    for e, g in zip(eager, graph, strict=True):
        assert g.summary["cuda_graph"] is True and e.summary["cuda_graph"] is False
        pd.testing.assert_frame_equal(e.steps, g.steps, check_exact=False, rtol=1e-4, atol=1e-5)
        pd.testing.assert_frame_equal(e.epochs, g.epochs, check_exact=False, rtol=1e-4, atol=1e-5)


def test_which_groups_can_be_captured_in_a_cuda_graph(tmp_path):
    from vgcore.train.graph import graph_safe
    from vgcore.train.learner import make_learner

    def learners(*configs):
        return [make_learner(c, 16, 6, torch.device("cpu")) for c in configs]

    demo = get_profile("demo")
    assert graph_safe(learners(*(demo.config("synthetic", loss, 0) for loss in demo.losses)))  # every loss and variant
    assert graph_safe(learners(*(smoke(loss) for loss in BASELINES)))
    assert not graph_safe(learners(smoke("scl", loss_params={"check_inputs": True})))
    with pytest.raises(ValueError, match="cuda_graph=True but the device is not CUDA"):
        train.run(smoke("triplet"), tmp_path / "r", cache_dir=tmp_path / "cache", progress=False, cuda_graph=True)
    assert not (tmp_path / "r").exists()
