"""vgcore.snapshot on hand-made runs: only what the notebooks read, thinned, deterministic, small."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vgcore import snapshot
from vgcore.config import get_profile
from vgcore.results import (
    SCHEMA_VERSION,
    STEP_COLUMNS,
    collect,
    embedding_sample,
    file_records,
    load_run,
    seal,
    write_embeddings,
)


def make_run(root: Path, dataset="synthetic", loss="triplet", seed=0, n_steps=250, wall=12.5, coarse=True,
             commit="a" * 40, recall=0.123456789012345) -> Path:
    rng = np.random.default_rng(seed)  # the same numbers for the same seed
    run = root / "demo" / dataset / loss / f"seed{seed}"
    run.mkdir(parents=True)
    config = get_profile("demo").config(dataset, loss, seed)  # the profile's own run: what a snapshot holds
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    steps = pd.DataFrame({c: rng.random(n_steps) for c in STEP_COLUMNS})
    steps["step"], steps["epoch"] = np.arange(n_steps), np.arange(n_steps) // 50 + 1
    steps["has_positives"] = True
    steps.to_csv(run / "steps.csv", index=False)
    pd.DataFrame({"epoch": [0, 1], "split": ["test", "test"], "recall@1": [0.1, recall]}).to_csv(
        run / "epochs.csv", index=False)
    y = np.repeat(np.arange(20), 80)
    write_embeddings(run, rng.normal(size=(len(y), 8)), y, y // 5 if coarse else None)
    summary = {"status": "complete", "config": config.to_dict(), "config_hash": config.config_hash(),
               "schema_version": SCHEMA_VERSION, "files": file_records(run),
               "final": {"recall@1": 0.123456789012345}, "convergence": {}, "greediness_mean": {},
               "wall_time_s": wall, "steps_per_s": n_steps / wall, "n_steps": n_steps,
               "resolved": config.resolved(), "versions": {"torch": "2.14.1"},
               "git": {"commit": commit, "dirty": False}}
    (run / "summary.json").write_text(json.dumps(seal(summary)))
    return run


def test_thin_steps_is_block_means_of_k_steps_by_hand():
    steps = pd.DataFrame({"step": np.arange(10), "epoch": np.arange(10) // 4 + 1, "train_loss": np.arange(10.0),
                          "has_positives": [True] * 9 + [False]})
    thin = snapshot.thin_steps(steps, 4)
    assert thin["train_loss"].tolist() == [1.5, 5.5, 8.5]  # (0+1+2+3)/4, (4+..+7)/4, (8+9)/2
    assert thin["step"].tolist() == [1, 5, 9] and thin["epoch"].tolist() == [1, 2, 3]  # the middle row's
    assert thin["has_positives"].tolist() == [True, True, False]
    assert snapshot.step_block(250) == 5 and snapshot.step_block(60) == 1


def test_snapshot_keeps_what_the_notebooks_read_and_nothing_volatile(tmp_path):
    results = tmp_path / "results"
    for seed in (0, 1):
        make_run(results, seed=seed)
    make_run(results, dataset="fashionmnist", coarse=False)
    archive = snapshot.write(results, "demo", tmp_path / "snap.tar.gz")
    restored = tmp_path / "restored"
    snapshot.restore(archive, restored)
    for table in ("summary", "epochs"):
        a, b = collect(results, table), collect(restored, table)
        cols = [c for c in a.columns if c not in ("wall_time_s", "steps_per_s")]
        pd.testing.assert_frame_equal(a[cols], b[cols])  # exact: the tables come from these
    copy = load_run(restored / "demo" / "synthetic" / "triplet" / "seed0")
    assert len(copy["steps"]) == 50 and copy["summary"]["snapshot"]["steps_block"] == 5
    assert copy["summary"]["wall_time_s"] is None and copy["summary"]["git"] == {"commit": None, "dirty": None}
    assert copy["summary"]["versions"] == {"torch": "2.14.1"}, "package versions stay"
    original = load_run(results / "demo" / "synthetic" / "triplet" / "seed0")
    keep = embedding_sample(original["embeddings"][1], original["coarse"])
    assert len(keep) == 5 * 50, "superclass 0's five fine classes, 50 samples each"
    assert (copy["embeddings"][0] == original["embeddings"][0][keep]).all()
    assert (embedding_sample(copy["embeddings"][1], copy["coarse"]) == np.arange(len(keep))).all(), \
        "the figure draws every sample the snapshot kept: the same figure as from the full run"
    assert not (restored / "demo" / "synthetic" / "triplet" / "seed1" / "embeddings.npz").exists(), "lowest seed only"
    fashion = load_run(restored / "demo" / "fashionmnist" / "triplet" / "seed0")
    assert fashion["coarse"] is None and len(fashion["embeddings"][1]) == 10 * 50, "first ten classes"


def test_snapshot_bytes_change_only_when_a_number_does(tmp_path):
    a, b, c = (tmp_path / n for n in ("a", "b", "c"))
    make_run(a, wall=10.0, commit="a" * 40)
    make_run(b, wall=99.0, commit="b" * 40)  # same numbers, another rebuild: other timings and commit
    make_run(c, recall=0.5)  # one number differs
    sa, sb, sc = (snapshot.archive_bytes(snapshot.members(r, "demo")) for r in (a, b, c))
    assert sa == sb and sa != sc
    out = snapshot.write(a, "demo", tmp_path / "snap.tar.gz")
    os.utime(out, (1, 1))
    snapshot.write(b, "demo", out)
    assert out.stat().st_mtime == 1, "an archive with the same content is left untouched"


def test_restore_says_where_the_snapshot_should_be(tmp_path):
    with pytest.raises(FileNotFoundError, match="figures/demo/results.tar.gz"):
        snapshot.restore(tmp_path / "missing.tar.gz", tmp_path)


@pytest.mark.parametrize("escaping", ["../synthetic/triplet/seed0/summary.json",
                                      "/synthetic/triplet/seed1/summary.json"])
def test_restore_refuses_an_escaping_member_before_writing_anything(tmp_path, escaping):
    """A good run first, then a member outside the results folder (five parts, like a run's file): the
    whole archive is refused up front, so no partial run is left behind for the notebooks to read."""
    import io
    import re
    import tarfile

    archive = tmp_path / "evil.tar.gz"
    good = [f"demo/synthetic/triplet/seed0/{name}" for name in ("config.json", "epochs.csv", "summary.json")]
    with tarfile.open(archive, "w:gz") as tar:
        for name in [*good, escaping]:  # in this order: the good run would be written first
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"{}"))
    sandbox = tmp_path / "sandbox"
    results = sandbox / "results"
    results.mkdir(parents=True)
    with pytest.raises((ValueError, tarfile.TarError)) as err:  # TarError: the extraction filter's, too late
        snapshot.restore(archive, results)
    assert sorted(sandbox.rglob("*")) == [results], "the restore wrote a partial run before refusing the archive"
    assert err.type is ValueError and re.fullmatch(
        rf"unexpected member '{re.escape(escaping)}' in .*evil\.tar\.gz: not <profile>/<dataset>/<loss>/seed<k>/<file>",
        str(err.value))
