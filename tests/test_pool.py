"""Tuning in worker processes (vgcore.pool, ``tune -j``): a group of trials cut into chunks of heads,
each chunk in its own process at one thread, scores every trial as the group trained in one process."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch
from test_tune import small_profile

from vgcore import pool, results
from vgcore.train import tune


def test_split_deals_members_round_robin_into_at_most_the_parts_asked():
    assert pool.split(list("abcde"), 2) == [["a", "c", "e"], ["b", "d"]]
    assert pool.split(list("ab"), 4) == [["a"], ["b"]]
    assert pool.split(list("abc"), 1) == [["a", "b", "c"]]


def test_jobs_are_all_cores_or_a_positive_integer():
    assert pool.parse_jobs("all") == pool.available_cores()
    assert pool.parse_jobs("3") == 3
    for bad in ("0", "-1", "two"):
        with pytest.raises(ValueError, match="positive integer or 'all'"):
            pool.parse_jobs(bad)


def test_tasks_in_this_process_run_at_the_threads_asked_and_restore_its_own():
    saved = torch.get_num_threads()
    assert pool.run_tasks(lambda: torch.get_num_threads(), [(), ()], 1, threads=1, progress=False) == [1, 1]
    assert torch.get_num_threads() == saved


def test_tuning_in_two_workers_writes_the_trials_of_one_process_byte_for_byte(tmp_path):
    profile = small_profile()
    one = tune.tune(profile, tmp_path / "one", seeds=(100,), cache_dir=tmp_path / "cache", progress=False)
    two = tune.tune(profile, tmp_path / "two", seeds=(100,), cache_dir=tmp_path / "cache", progress=False, jobs=2)
    assert one["map@r"].notna().all()
    pd.testing.assert_frame_equal(one, two)
    sizes = set()
    for _, row in one.iterrows():
        config = tune.trial_configs(profile, row["dataset"], row["loss"], row["seed"])[row["trial"]]
        a, b = (tune.trial_dir(tmp_path / root, config, row["trial"]) for root in ("one", "two"))
        for name in ("steps.csv", "epochs.csv", "embeddings.npz"):
            assert (a / name).read_bytes() == (b / name).read_bytes(), f"{a}: {name} differs"
        sizes.add((results.read_summary(a)["group_size"], results.read_summary(b)["group_size"]))
    n = len(one)
    assert sizes == {(n, n // 2)}  # one group of every trial; two chunks of half of them in the workers


def test_an_error_inside_a_worker_reaches_the_caller_with_its_message(tmp_path):
    # a class smaller than K: the sampler refuses the group inside each worker, before anything is written
    base = small_profile()
    profile = dataclasses.replace(base, settings={**base.settings, "sampler": "pk_distinct", "samples_per_class": 40})
    with pytest.raises(ValueError, match="samples_per_class"):
        tune.tune(profile, tmp_path, seeds=(100,), cache_dir=tmp_path / "cache", progress=False, jobs=2)
